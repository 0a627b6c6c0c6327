"""The fidelity figures of ``flexllm verify``: the Brevitas noise floor (agreement with itself under a
1-ulp perturbation of its embeddings) and the golden / Brevitas prompt perplexity, checked against
independent computations (torch cross-entropy, float32 ulp spacing)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brevitas_models.golden import GoldenModel
from flexllm_plugin.project.verify import (brevitas_noise_floor, brevitas_teacher_forced, golden_generate,
                                           perturbed_embeddings, prompt_perplexity)
from helpers import text_tokens, tiny_model


@pytest.fixture(scope="module")
def models():
    model = tiny_model("flexllm-w4a4")
    return model, GoldenModel.from_brevitas(model)


def test_perturbation_moves_every_embedding_entry_by_one_ulp_both_ways_and_restores(models):
    model, _ = models
    w0 = model.embed_tokens.weight.detach().clone()
    with perturbed_embeddings(model):
        w1 = model.embed_tokens.weight.detach().clone()
    assert torch.equal(model.embed_tokens.weight.detach(), w0)
    a, b = w0.numpy(), w1.numpy()
    step = np.abs(b.astype(np.float64) - a.astype(np.float64))
    # one ulp: the neighbour of a in the direction of b, checked with numpy's own nextafter
    toward = np.where(b > a, np.float32(np.inf), np.float32(-np.inf))
    assert np.array_equal(b, np.nextafter(a, toward))
    assert np.all(step > 0)
    up = (b > a).mean()
    assert 0.45 < up < 0.55                       # random signs, not a constant shift


def test_prompt_perplexity_equals_torch_cross_entropy(models):
    model, _ = models
    prompt = text_tokens()[:40].tolist()
    with torch.no_grad():
        logits, _ = model(torch.tensor([prompt]))
    ref = float(torch.exp(F.cross_entropy(logits[0, :-1].double(), torch.tensor(prompt[1:]))))
    assert prompt_perplexity(logits[0].double().numpy(), prompt) == pytest.approx(ref, rel=1e-12)
    assert prompt_perplexity(logits[0].numpy(), prompt[:1]) is None


def test_noise_floor_and_golden_brevitas_perplexity_on_the_tiny_model(models):
    model, golden = models
    prompt = text_tokens()[:32].tolist()
    golden_logits, brevitas_logits = [], []
    tokens, _, _, _ = golden_generate(golden, prompt, 8, golden_logits)
    bt = brevitas_teacher_forced(model, prompt, tokens, brevitas_logits)
    floor = brevitas_noise_floor(model, prompt, tokens, bt)
    # the floor is the same measurement as the agreement, done by hand here with a perturbed copy
    with perturbed_embeddings(model):
        noisy = brevitas_teacher_forced(model, prompt, tokens)
    assert floor == np.mean([a == b for a, b in zip(noisy, bt)])
    assert 0.0 <= floor <= 1.0
    assert brevitas_teacher_forced(model, prompt, tokens) == bt           # restored: same tokens as before
    g = prompt_perplexity(golden_logits[0], prompt)
    b = prompt_perplexity(brevitas_logits[0], prompt)
    # golden rows are exactly golden.prefill's; the two models agree within 2 % on the tiny model
    full, _, _ = golden.prefill(np.asarray(prompt))
    assert np.array_equal(golden_logits[0], np.asarray(full).reshape(len(prompt), -1))
    assert g == pytest.approx(b, rel=0.02)
