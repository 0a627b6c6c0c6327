"""Diagnostic of HMT quality: does the memory position or the recalled memory cost perplexity? On the HMT
checkpoint's merged float backbone, scores segments 1..N-1 with the main pass ``[X, k sensory, block]`` for a
constant X (the learned P_0, a zero embedding, the mean token embedding), to compare with ``ppl --long
sensory`` (no X) and ``ppl --long hmt`` (X = the recalled P_n). Prints one line per X and one JSON object.

    python benchmarks/hmt_memory_position.py configs/smollm2_135m_hmt.yaml --segments 16
"""

import argparse
import json
import math
import sys


def main(argv=None):
    import torch
    import torch.nn.functional as F
    from brevitas_models.build import build_model
    from brevitas_models.hmt.backbone import hmt_backbone_weights
    from brevitas_models.hmt.wrapper import HMTWrapper
    from brevitas_models.text import encode, load_text
    from flexllm_plugin.cli import _hmt_params
    from flexllm_plugin.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--segments", type=int, default=16)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    hmt = cfg.hmt_spec()
    weights = cfg.load_weights()
    params, checkpoint = _hmt_params(cfg, weights, hmt, weights.arch.hidden_size, lambda m: None)
    model = build_model(hmt_backbone_weights(weights, params), cfg.quant_spec("float", "none")).eval()
    wrapper = HMTWrapper(model, hmt, params)
    block, k = hmt.block, hmt.sensory_tokens
    ids = encode(weights.tokenizer, load_text(None))[:args.segments * block][None]
    d = weights.arch.hidden_size
    xs = {"P_0": params.initial_memory.detach(), "zero": torch.zeros(d),
          "mean_token_embedding": model.embed_tokens.weight.detach().mean(0)}
    out = {"checkpoint": checkpoint, "segments": args.segments,
           "norms": {"P_0": float(params.initial_memory.norm()),
                     "token_embedding_mean": float(model.embed_tokens.weight.norm(dim=1).mean())}, "ppl": {}}
    with torch.no_grad():
        for name, x in xs.items():
            nll, n = 0.0, 0
            for s in range(1, args.segments):
                blk, tail = ids[:, s * block:(s + 1) * block], ids[:, s * block - k:s * block]
                e = torch.cat([x[None, None], model.embed_tokens(tail), model.embed_tokens(blk)], 1)
                _, post = wrapper.backbone(e)
                logits = model.lm_head(post[:, 1 + k:])
                nll += float(F.cross_entropy(logits[0, :-1].double(), blk[0, 1:], reduction="sum"))
                n += block - 1
            out["ppl"][name] = round(math.exp(nll / n), 3)
            print(f"[X = {name}, sensory, block]: perplexity {out['ppl'][name]} over {n} tokens", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
