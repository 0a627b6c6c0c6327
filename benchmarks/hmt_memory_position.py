"""Diagnostic of HMT quality: does the memory position or the recalled memory cost perplexity? On the HMT
checkpoint's merged float backbone, scores segments 1..N-1 with the main pass ``[X, k sensory, block]`` for a
constant X (the learned P_0, a zero embedding, the mean token embedding), with X = the recalled P_n of the
segment itself (= ``ppl --long hmt``) and with X = the recalled P_n of another segment (segment s gets the
row recalled for segment 1 + (s - 1 + (N - 1) // 2) mod (N - 1)): if the last two agree, the backbone ignores
what the memory holds. Compare with ``ppl --long sensory`` (no X). Also prints the norms of the recalled
rows, their mean pairwise cosine, the recall's softmax per segment (the slot it weighs most and that weight)
and the learned recall scale (HMT.RecallScale). Prints one line per X and one JSON object.

    python benchmarks/hmt_memory_position.py configs/smollm2_135m_hmt.yaml --segments 16
"""

import argparse
import json
import math
import sys


def _mean_pairwise_cosine(rows) -> float:
    import torch
    u = torch.nn.functional.normalize(rows.double(), dim=1)
    c = u @ u.t()
    n = rows.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1))) if n > 1 else 1.0


def main(argv=None):
    import torch
    import torch.nn.functional as F
    from brevitas_models.build import build_model
    from brevitas_models.hmt import memory as hmt_memory
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
    rows = []                                     # the input row P_n of every segment's main pass
    weights = []                                  # the recall's softmax over the filled slots, per segment
    main_input = wrapper.main_input
    wrapper.main_input = lambda block_ids, memory, tail, trailing: (
        rows.append(memory.detach()[0].clone()), main_input(block_ids, memory, tail, trailing))[1]
    recall = hmt_memory.recall

    def recording_recall(summary, keys, memories, filled, w_q):
        q = summary.float() @ w_q.t()
        scores = torch.einsum("bd,bnd->bn", q, keys.float()) / math.sqrt(w_q.shape[0])
        weights.append(torch.softmax(scores.masked_fill(~filled[None, :], float("-inf")), -1)[0, filled].detach())
        return recall(summary, keys, memories, filled, w_q)
    hmt_memory.recall = recording_recall
    try:
        with torch.no_grad():
            wrapper.run(ids)
    finally:
        wrapper.main_input = main_input
        hmt_memory.recall = recall
    later = list(range(1, args.segments))
    other = {s: 1 + (s - 1 + (len(later)) // 2) % len(later) for s in later}
    xs = {"P_0": lambda s: params.initial_memory.detach(), "zero": lambda s: torch.zeros(d),
          "mean_token_embedding": lambda s: model.embed_tokens.weight.detach().mean(0),
          "recalled_P_n": lambda s: rows[s], "recalled_P_n_of_another_segment": lambda s: rows[other[s]]}
    scale = getattr(params, "recall_scale", None)
    out = {"checkpoint": checkpoint, "segments": args.segments, "recall_scale": hmt.recall_scale,
           "recall_scale_values": None if scale is None else
           {"mean": float(scale.detach().mean()), "min": float(scale.detach().min()),
            "max": float(scale.detach().max())},
           # the recall: the slot with the largest weight and that weight, per segment 1..N-1 (a weight of
           # 1.0 on one slot for every segment: the softmax is saturated and the recalled row is a constant)
           "recall_argmax_slot": [int(w.argmax()) for w in weights],
           "recall_max_weight": [round(float(w.max()), 4) for w in weights],
           "norms": {"P_0": float(params.initial_memory.norm()),
                     "recalled_P_n_mean": float(torch.stack(rows[1:]).norm(dim=1).mean()),
                     # how alike the recalled rows of different segments are (1: the same direction)
                     "recalled_P_n_mean_pairwise_cosine": _mean_pairwise_cosine(torch.stack(rows[1:])),
                     "token_embedding_mean": float(model.embed_tokens.weight.norm(dim=1).mean())}, "ppl": {}}
    with torch.no_grad():
        for name, x_of in xs.items():
            nll, n = 0.0, 0
            for s in later:
                x = x_of(s)
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
