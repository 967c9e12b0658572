"""The decoder: a compiled decode step and a reused static cache never change a rollout."""

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from motg_lightning.rollout.decoder import Decoder
from motg_lightning.rules.paper import Dirichlet, Discrete
from motg_lightning.rollout.generate import generate


def _same_rollouts(first, second):
    assert torch.equal(first.tokens, second.tokens)
    assert torch.equal(first.support, second.support)
    assert torch.equal(first.completion_mask, second.completion_mask)
    torch.testing.assert_close(first.weights, second.weights)
    torch.testing.assert_close(first.log_likelihood, second.log_likelihood, atol=1e-5, rtol=1e-5)


def _rollout(model, rule, prompts, settings, decoder, seed=5):
    torch.manual_seed(seed)
    return generate(model, rule, *prompts, settings, decoder)


@pytest.mark.parametrize("rule", [Discrete(), Dirichlet()], ids=lambda r: type(r).__name__)
def test_compiled_decode_step_gives_the_same_trajectories(tiny_model, prompts, make_settings, rule):
    settings = make_settings(max_new_tokens=10, thinking_budget=4)
    plain = _rollout(tiny_model, rule, prompts, settings, Decoder(static_cache=False))
    compiled = _rollout(tiny_model, rule, prompts, settings, Decoder(compile_mode="default", compile_backend="aot_eager"))
    _same_rollouts(plain, compiled)


def test_compiled_step_is_captured_once_and_its_cache_reused(tiny_model, prompts, make_settings):
    """Rollouts of the same batch, even with a shorter prompt, replay one graph over one cache."""
    counter = CompileCounter()
    decoder = Decoder(compile_mode="default", compile_backend=counter, length_multiple=64)
    settings = make_settings(max_new_tokens=6)
    ids, mask = prompts
    first = _rollout(tiny_model, Dirichlet(), prompts, settings, decoder)
    cache = decoder._kept
    again = _rollout(tiny_model, Dirichlet(), prompts, settings, decoder)
    shorter = _rollout(tiny_model, Dirichlet(), (ids[:, 2:], mask[:, 2:]), settings, decoder)
    assert counter.frame_count == 1
    assert decoder._kept is cache
    _same_rollouts(first, again)  # the reset cache holds nothing of the first rollout
    expected = _rollout(tiny_model, Dirichlet(), (ids[:, 2:], mask[:, 2:]), settings, Decoder())
    _same_rollouts(shorter, expected)


def test_inductor_compiled_rollout_matches_the_eager_one(tiny_model, prompts, make_settings):
    """The real fast path (generated kernels) on the CPU: same tokens for the same seed."""
    settings = make_settings(max_new_tokens=8)
    eager = _rollout(tiny_model, Discrete(), prompts, settings, Decoder())
    compiled = _rollout(tiny_model, Discrete(), prompts, settings, Decoder(compile_mode="default"))
    assert torch.equal(eager.tokens, compiled.tokens)
    torch.testing.assert_close(eager.log_likelihood, compiled.log_likelihood, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("static_cache", [True, False], ids=["static", "dynamic"])
def test_under_mixed_precision_the_cache_holds_keys_and_values_in_the_compute_dtype(tiny_model, prompts, make_settings, static_cache):
    """Lightning's bf16-mixed runs the rollout under autocast. Fed float32 embeddings there, the
    rotary embedding made float32 keys beside bfloat16 values, and the CUDA cache write of the
    first decode step failed (seen on an H100 under every strategy)."""
    decoder = Decoder(static_cache=static_cache)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoder.prefill(tiny_model, *prompts, steps=4)
        cache = next(iter(decoder._state["cache"].values()))
        assert {layer.keys.dtype for layer in cache.layers} == {torch.bfloat16}
        assert {layer.values.dtype for layer in cache.layers} == {torch.bfloat16}
        rollout = generate(tiny_model, Dirichlet(), *prompts, make_settings(max_new_tokens=6), decoder)
    assert rollout.completion_mask.any() and torch.isfinite(rollout.log_likelihood).all()


def test_compiling_needs_a_static_cache():
    with pytest.raises(ValueError, match="static_cache"):
        Decoder(static_cache=False, compile_mode="reduce-overhead")
