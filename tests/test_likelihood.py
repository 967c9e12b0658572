import pytest
import torch

from motg_lightning.rules.dense import Gaussian, MixtureOfInputs
from motg_lightning.rules.hybrid import HRPO
from motg_lightning.grpo.likelihood import trajectory_log_likelihood
from motg_lightning.rules.paper import Dirichlet, Discrete, ElementwiseMax, Nucleus, Sampled, TopK
from motg_lightning.rules.related import Gumbel, LatentGRPO, Multiplex
from motg_lightning.rollout.generate import generate

from helpers import carrying_rule_parameters

RULES = [
    Discrete(), TopK(), TopK(likelihood="weighted"), Dirichlet(), Dirichlet(likelihood="weighted"),
    Sampled(likelihood="weighted"), Nucleus(k=3), ElementwiseMax(likelihood="weighted"),
    Dirichlet(likelihood="density"), Gumbel(), Multiplex(), Multiplex(weighting="renormalised", likelihood="weighted"),
    Gaussian(k=4), MixtureOfInputs(k=3), HRPO(k=8), LatentGRPO(k=3),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{type(r).__name__}-{r.likelihood}")
def test_recomputed_log_likelihood_matches_the_rollout(tiny_model, tokenizer, prompts, rule, make_settings):
    """The loss's forward over rebuilt embeddings sees exactly what generation saw."""
    tiny_model = carrying_rule_parameters(tiny_model, rule)
    torch.manual_seed(0)
    ids, mask = prompts
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=14, thinking_budget=4))
    recomputed = trajectory_log_likelihood(tiny_model, rule, rollout)
    torch.testing.assert_close(recomputed[rollout.completion_mask], rollout.log_likelihood[rollout.completion_mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{type(r).__name__}-{r.likelihood}")
def test_log_likelihood_has_finite_gradients(tiny_model, tokenizer, prompts, make_settings, rule):
    """Also through steps that did not mix, whose rule-specific likelihood is discarded."""
    tiny_model = carrying_rule_parameters(tiny_model, rule)
    torch.manual_seed(0)
    ids, mask = prompts
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=12, thinking_budget=3))
    assert (~rollout.thinking & rollout.loss_mask).any() and rollout.thinking.any()
    tiny_model.zero_grad()
    trajectory_log_likelihood(tiny_model, rule, rollout, chunk_size=4)[rollout.loss_mask].sum().backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    tiny_model.zero_grad()


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunked_vocabulary_projection_gives_the_same_values_and_gradients(tiny_model, tokenizer, prompts, make_settings, chunk_size):
    torch.manual_seed(0)
    ids, mask = prompts
    rule = Sampled(likelihood="weighted")
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=9, thinking_budget=3))
    results = []
    for size in (None, chunk_size):
        tiny_model.zero_grad()
        values = trajectory_log_likelihood(tiny_model, rule, rollout, chunk_size=size)
        values[rollout.loss_mask].sum().backward()
        results.append((values.detach(), [p.grad.clone() for p in tiny_model.parameters()]))
    tiny_model.zero_grad()
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    for whole, chunked in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=1e-4)
