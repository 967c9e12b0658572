import pytest
import torch

from motg_lightning.likelihood import trajectory_log_likelihood
from motg_lightning.mixture import Dirichlet, Discrete, ElementwiseMax, Nucleus, Sampled, TopK
from motg_lightning.rollout import generate

RULES = [
    Discrete(), TopK(), TopK(likelihood="weighted"), Dirichlet(), Dirichlet(likelihood="weighted"),
    Sampled(likelihood="weighted"), Nucleus(k=3), ElementwiseMax(likelihood="weighted"),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{type(r).__name__}-{r.likelihood}")
def test_recomputed_log_likelihood_matches_the_rollout(tiny_model, tokenizer, prompts, rule, make_settings):
    """The loss's forward over rebuilt embeddings sees exactly what generation saw."""
    torch.manual_seed(0)
    ids, mask = prompts
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=14, thinking_budget=4))
    recomputed = trajectory_log_likelihood(tiny_model, rule, rollout)
    torch.testing.assert_close(recomputed[rollout.completion_mask], rollout.log_likelihood[rollout.completion_mask], atol=1e-4, rtol=1e-4)


def test_log_likelihood_is_differentiable(tiny_model, tokenizer, prompts, make_settings):
    torch.manual_seed(0)
    ids, mask = prompts
    rule = Dirichlet()
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=6))
    tiny_model.zero_grad()
    trajectory_log_likelihood(tiny_model, rule, rollout)[rollout.loss_mask].sum().backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    tiny_model.zero_grad()
