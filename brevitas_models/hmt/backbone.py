"""The backbone an HMT model runs on.

HMT as trained by ``flexllm hmt-train`` today leaves the backbone unchanged (only T, P_0, W_q, W_k are
trained), so :func:`hmt_backbone_weights` returns the weights as they are. A checkpoint that also adapts
the backbone (for example LoRA, as the original HMT training may) merges its adapter here, once, so that
every consumer (long-context perplexity, calibration of a quantized preset, the golden model and the
generated project) quantizes and runs the same merged float weights.
"""

from __future__ import annotations


def hmt_backbone_weights(weights, params):
    """The float backbone weights the HMT parameters ``params`` were trained with (``weights`` itself when
    the checkpoint carries no backbone adapter)."""
    return weights
