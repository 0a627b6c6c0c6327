"""Modeled figures of a config without building anything: resources per kernel and SLR, decode tokens/s at
128 / 512 / 1024 / 2048 keys, prefill seconds for 128 / 512 / 1024 prompt tokens (flexllm_plugin/cost).

    python benchmarks/estimates.py configs/llama32_1b_u280.yaml [--set Decode.BP=24 --set Prefill.TP=16] [--json]
"""

import argparse
import json
import sys
import time

import yaml


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config value (YAML scalar), e.g. Decode.BP=24")
    ap.add_argument("--json", action="store_true", help="print the whole estimates dict as JSON")
    args = ap.parse_args(argv)

    from flexllm_plugin.config import parse_config
    from flexllm_plugin.cost.from_config import models_of_config
    from flexllm_plugin.cost.report import markdown, project_estimates
    from flexllm_plugin.preflight import model_arch

    data = yaml.safe_load(open(args.config))
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        data.setdefault(section, {})[name] = yaml.safe_load(value)
    t0 = time.perf_counter()
    cfg = parse_config(data, args.config)
    arch = model_arch(cfg)
    models = models_of_config(cfg, arch, cfg.quant_spec())
    est = project_estimates(models["prefill"], models["decode"], int(cfg["Prefill"]["MaxSeqLen"]),
                            int(cfg["Decode"]["MaxContext"]))
    if args.json:
        json.dump(est, sys.stdout, indent=1)
        print()
    else:
        print("\n".join(markdown(est)))
        print(f"\n(model evaluated in {time.perf_counter() - t0:.2f} s)")


if __name__ == "__main__":
    main()
