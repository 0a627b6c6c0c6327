"""Long-context perplexity (brevitas_models/hmt/long_context.py): every mode scores the same tokens;
independent segments equal the windowed perplexity of evaluation.py; the window mode equals one causal
pass of the whole text (or a recomputed window per segment when the text exceeds it)."""

import math

import pytest
import torch
import torch.nn.functional as F

from brevitas_models.evaluation import perplexity
from brevitas_models.hmt.long_context import MODES, long_context_perplexity, mode_spec
from brevitas_models.hmt.spec import HMTSpec
from brevitas_models.hmt.train import initial_params
from tests.helpers import text_tokens, tiny_model, tiny_weights

SPEC = HMTSpec(segment_length=40, sensory_tokens=6, memory_slots=2)     # block 32


def test_modes_keep_the_block_and_score_the_same_tokens():
    model = tiny_model("float")
    tokens = text_tokens()
    results = {m: long_context_perplexity(model, SPEC, tokens, 4, m, params=initial_params(model)) for m in MODES}
    assert {r["scored_tokens"] for r in results.values()} == {3 * 31}
    assert all(mode_spec(SPEC, m).block == SPEC.block for m in ("independent", "sensory", "hmt"))
    assert len({round(r["ppl"], 6) for r in results.values()}) == 4


@pytest.mark.parametrize("preset", ["float", "flexllm-w4a4"])
def test_independent_equals_windowed_perplexity(preset):
    model = tiny_model(preset)
    tokens = text_tokens()
    got = long_context_perplexity(model, SPEC, tokens, 4, "independent")
    ref = perplexity(model, tokens[32:128].view(3, 32))
    assert abs(got["ppl"] - ref["ppl"]) < 1e-6 * ref["ppl"] and got["scored_tokens"] == ref["scored_tokens"]


def test_window_equals_one_causal_pass():
    model = tiny_model("float")
    ids = text_tokens()[:128]
    got = long_context_perplexity(model, SPEC, ids, 4, "window")
    with torch.no_grad():
        logits, _ = model(ids[None])
    nll = sum(float(F.cross_entropy(logits[0, s:s + 31].double(), ids[s + 1:s + 32], reduction="sum"))
              for s in (32, 64, 96))
    assert abs(got["ppl"] - math.exp(nll / 93)) < 1e-4 * got["ppl"]


def test_window_shorter_than_the_text_recomputes_each_segment():
    model = tiny_model("float")
    ids = text_tokens()[:128]
    got = long_context_perplexity(model, SPEC, ids, 4, "window", window=48)
    nll = 0.0
    with torch.no_grad():
        for end in (64, 96, 128):
            ctx = ids[end - 48:end]
            logits, _ = model(ctx[None])
            nll += float(F.cross_entropy(logits[0, 16:47].double(), ctx[17:48], reduction="sum"))
    assert abs(got["ppl"] - math.exp(nll / 93)) < 1e-4 * got["ppl"] and got["window"] == 48


def test_bad_requests():
    model = tiny_model("float")
    with pytest.raises(ValueError, match="--segments must be >= 2"):
        long_context_perplexity(model, SPEC, text_tokens(), 1, "sensory")
    with pytest.raises(ValueError, match="need 128 tokens, the text has 100"):
        long_context_perplexity(model, SPEC, text_tokens()[:100], 4, "sensory")
    with pytest.raises(ValueError, match="--long must be one of"):
        long_context_perplexity(model, SPEC, text_tokens(), 4, "full")
    with pytest.raises(ValueError, match="needs its parameters"):
        long_context_perplexity(model, SPEC, text_tokens(), 4, "hmt")
