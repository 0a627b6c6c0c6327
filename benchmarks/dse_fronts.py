"""Closing data of the design-space search: for each board and objective, the Pareto fronts, the chosen
configuration, its modeled figures and the search time (median of --repeat cold runs).

    python benchmarks/dse_fronts.py configs/llama32_1b_u280.yaml --board u280 --board v80 \
        --objective prefill --objective decode --repeat 3 --json-out build/dse_fronts.json

Prints one block per (board, objective); --json-out writes every result dict (as `flexllm dse --json`).
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def _knobs(k):
    from flexllm_plugin.dse.render import SHORT
    return " ".join(f"{SHORT.get(n, n)}={v}" for n, v in k.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--board", action="append", default=None)
    ap.add_argument("--objective", action="append", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)

    from flexllm_plugin.dse.memo import clear_cache
    from flexllm_plugin.dse.run import run_dse

    results = []
    for board in args.board or ["u280", "v80"]:
        for objective in args.objective or ["prefill", "decode"]:
            times, cpu, r = [], [], None
            for _ in range(args.repeat):
                clear_cache()
                t0, c0 = time.perf_counter(), time.process_time()
                r = run_dse(args.config, board=board, objective=objective)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            r["search_seconds_runs"] = [round(t, 2) for t in times]
            r["search_seconds_median"] = round(statistics.median(times), 2)
            r["search_cpu_seconds_median"] = round(statistics.median(cpu), 2)
            load = os.getloadavg()[0]
            results.append(r)
            m = r["best"]["metrics"]
            print(f"== {board} {objective}: search {statistics.median(times):.1f} s wall (median of {args.repeat}: "
                  f"{', '.join(f'{t:.1f}' for t in times)}), {statistics.median(cpu):.1f} s CPU; load average "
                  f"{load:.1f} on {os.cpu_count()} cores; {r['mode']}, space {r['space_size']:,}")
            print(f"   chosen {_knobs(r['best']['knobs'])}")
            print(f"   decode {m['decode_tokens_per_s']:.1f} tok/s @ {r['context']} keys, prefill({r['prompt']}) "
                  f"{m['prefill_seconds']:.3f} s, end-to-end {m['end_to_end_seconds']:.3f} s, largest share "
                  f"{100 * m['utilization']:.1f} %")
            print("   front prefill vs decode (prefill s, decode tok/s, share %):")
            for p in r["pareto"]["prefill_vs_decode"]:
                q = p["metrics"]
                print(f"     {q['prefill_seconds']:.3f} {q['decode_tokens_per_s']:7.1f} {100 * q['utilization']:5.1f}  "
                      f"{_knobs(p['knobs'])}")
            print("   front decode tok/s vs decode-kernel share:")
            for p in r["pareto"]["decode_tokens_per_s_vs_utilization"]:
                q = p["metrics"]
                print(f"     {100 * q['decode_utilization']:5.1f} % {q['decode_tokens_per_s']:7.1f}  {_knobs(p['knobs'])}")
            print("   front prefill s vs prefill-kernel share:")
            for p in r["pareto"]["prefill_seconds_vs_utilization"]:
                q = p["metrics"]
                print(f"     {100 * q['prefill_utilization']:5.1f} % {q['prefill_seconds']:.3f}  {_knobs(p['knobs'])}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=1, default=float))
        print(f"results written to {args.json_out}")


if __name__ == "__main__":
    main()
