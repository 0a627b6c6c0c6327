"""Search time and result of ``flexllm dse`` per board (median over --repeat runs, the unit cache cleared
before each run so every run starts cold).

    python benchmarks/dse_search.py configs/llama32_1b_u280.yaml --board u280 --board v80 [--objective end-to-end] [--repeat 3]
    python benchmarks/dse_search.py configs/llama32_1b_u280.yaml --board u280 --objective prefill --compare \
        --space Decode.BP=26,28 --space Decode.KVParallel=4,8 --space Decode.HP=2,4
        (local search against the exhaustive one on a space small enough to enumerate: same optimum?)
"""

import argparse
import statistics
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--board", action="append", default=None)
    ap.add_argument("--objective", action="append", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--space", action="append", default=[], help="as flexllm dse --space")
    ap.add_argument("--compare", action="store_true", help="run exhaustive and local search, compare the optima")
    args = ap.parse_args(argv)

    from flexllm_plugin.dse.memo import clear_cache
    from flexllm_plugin.dse.run import run_dse

    if args.compare:
        for board in args.board or ["u280"]:
            for objective in args.objective or ["prefill"]:
                for mode in ("exhaustive", "local"):
                    clear_cache()
                    t0 = time.perf_counter()
                    r = run_dse(args.config, board=board, objective=objective, space=args.space, mode=mode)
                    m = r["best"]["metrics"]
                    print(f"{board} {objective} {mode:10} {time.perf_counter() - t0:5.1f} s, "
                          f"{r['evaluations']['prefill_kernel_timed']} prefill kernels timed: prefill "
                          f"{m['prefill_seconds']:.5f} s, decode {m['decode_tokens_per_s']:.2f} tok/s, "
                          f"end-to-end {m['end_to_end_seconds']:.5f} s | {r['best']['knobs']}")
        return
    for board in args.board or ["u280", "v80"]:
        for objective in args.objective or ["decode", "prefill", "end-to-end"]:
            times, r = [], None
            for _ in range(args.repeat):
                clear_cache()
                t0 = time.perf_counter()
                r = run_dse(args.config, board=board, objective=objective, space=args.space)
                times.append(time.perf_counter() - t0)
            m, k = r["best"]["metrics"], r["best"]["knobs"]
            print(f"{board:5} {objective:10} search {statistics.median(times):5.1f} s (median of {args.repeat}, "
                  f"{r['mode']}, space {r['space_size']:,}) | decode {m['decode_tokens_per_s']:.1f} tok/s @ "
                  f"{r['context']} keys, prefill({r['prompt']}) {m['prefill_seconds']:.3f} s, end-to-end "
                  f"({r['prompt']}+{r['new_tokens']}) {m['end_to_end_seconds']:.3f} s, util "
                  f"{100 * m['utilization']:.1f} % | " + " ".join(f"{n.split('.')[0][0]}.{n.split('.')[1]}={v}"
                                                             for n, v in k.items()))


if __name__ == "__main__":
    main()
