"""Modeled prefill time of a long prompt on the U280 (the cost model, flexllm_plugin/cost): HMT
(per segment: the summary pass of j + 2 tokens, the memory recall and key on the fp32 GEMV unit, the
main pass of L tokens) against full attention over the whole prompt in one prefill. Prints one JSON
object and a markdown table. Each prefill pass is priced as prefill_cycles (it includes the LM head and
sampling once per pass, which HMT's summary passes do not need: the HMT figures are upper bounds).

    python benchmarks/hmt_prefill_model.py configs/smollm2_135m_u280.yaml --segments 4 16 64
"""

import argparse
import json
import sys


def main(argv=None):
    from flexllm_plugin.config import load_config
    from flexllm_plugin.cost.from_config import models_of_config
    from flexllm_plugin.preflight import model_arch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--segments", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--recall-lanes", type=int, default=16)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    hmt = cfg.hmt_spec()
    arch = model_arch(cfg)
    prefill = models_of_config(cfg, arch, cfg.quant_spec())["prefill"]
    from flexllm_plugin.cost.memory_recall import hmt_long_prompt
    f = prefill.clock_mhz * 1e6
    summary_s = sum(prefill.prefill_cycles(hmt.summary + 2).values()) / f
    main_s = sum(prefill.prefill_cycles(hmt.segment_length).values()) / f
    rows = hmt_long_prompt(prefill, hmt.segment_length, hmt.block, hmt.summary, arch.hidden_size, hmt.memory_slots,
                           args.recall_lanes, args.segments)
    for r in rows:
        print(r, file=sys.stderr, flush=True)
    print("| segments | prompt tokens | HMT prefill s | of which recall s | full attention s | speedup |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['segments']} | {r['prompt_tokens']} | {r['hmt_s']} | {r['hmt_recall_s']} | "
              f"{r['full_attention_s']} | {r['speedup']}x |")
    print(json.dumps({"config": args.config, "segment_length": hmt.segment_length, "block": hmt.block,
                      "summary_tokens": hmt.summary, "kv_positions_hmt": hmt.segment_length,
                      "summary_pass_s": round(summary_s, 4), "main_pass_s": round(main_s, 4), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
