"""What every mixture rule promises through the shared interface (METHOD.md §5, issue: every
soft-token method behind one interface)."""

import pytest
import torch

from motg_lightning.dense_rules import Gaussian, MixtureOfInputs
from motg_lightning.mixture import Dirichlet, Discrete, ElementwiseMax, Nucleus, Sampled, TopK
from motg_lightning.related_rules import Gumbel, Multiplex

from helpers import EMBEDDING, VOCAB, random_log_probs

ALL_RULES = [
    Discrete(), TopK(k=3), Dirichlet(k=3), Dirichlet(k=3, likelihood="density"), Sampled(k=3), Nucleus(k=3, top_p=0.5),
    ElementwiseMax(k=3), Gumbel(k=3), Multiplex(k=3), Multiplex(k=3, weighting="renormalised"), Gaussian(k=4),
    MixtureOfInputs(k=3),
]


def _name(rule):
    return f"{type(rule).__name__}-{rule.likelihood}"


@pytest.mark.parametrize("rule", ALL_RULES, ids=_name)
def test_weights_on_the_simplex_and_the_token_carries_weight(rule):
    torch.manual_seed(0)
    step = rule.choose(random_log_probs(), EMBEDDING)
    assert step.support.shape == step.weights.shape == (64, rule.support_size)
    assert (step.weights >= 0).all()
    torch.testing.assert_close(step.weights.sum(-1), torch.ones(64))
    chosen = step.support == step.token[:, None]
    assert (chosen & (step.weights > 0)).any(-1).all(), "representative must be a support token with weight"


@pytest.mark.parametrize("rule", ALL_RULES, ids=_name)
def test_every_likelihood_has_finite_gradients(rule):
    torch.manual_seed(0)
    for likelihood in rule.LIKELIHOODS:
        rule.likelihood = likelihood
        logits = torch.randn(16, VOCAB, requires_grad=True)
        step = rule.choose(rule.log_probs(logits).detach(), EMBEDDING)
        value = rule.step_log_likelihood(rule.log_probs(logits), step, EMBEDDING)
        value.sum().backward()
        assert value.shape == (16,) and torch.isfinite(value).all(), likelihood
        assert torch.isfinite(logits.grad).all(), likelihood


# k = 1 (or no noise, or a dominant sample): the input is one token's embedding, and that token is
# drawn from p (sampling rules) or is its mode (rules built on the top k).
SAMPLED_AT_ONE = [Discrete(temperature=1.0), Sampled(k=1, temperature=1.0), Multiplex(k=1, temperature=1.0),
                  MixtureOfInputs(k=3, beta=1e6, temperature=1.0)]
GREEDY_AT_ONE = [TopK(k=1), Dirichlet(k=1), Nucleus(k=1), ElementwiseMax(k=1), Gumbel(k=1),
                 Gaussian(k=4, thinking_temperature=1e-7, noise_scale=0.0, likelihood="representative")]


def _assert_one_token_input(rule, step):
    torch.testing.assert_close(rule.embed(EMBEDDING, step), EMBEDDING(step.token), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rule", SAMPLED_AT_ONE, ids=_name)
def test_reduces_to_discrete_sampling(rule):
    torch.manual_seed(0)
    probs = torch.tensor([0.55, 0.3, 0.1, 0.05])
    log_probs = probs.log().expand(20000, 4)
    step = rule.choose(log_probs, EMBEDDING)
    _assert_one_token_input(rule, step)
    frequencies = torch.bincount(step.token, minlength=4).float() / 20000
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)
    if rule.likelihood in ("representative", "sum"):
        torch.testing.assert_close(rule.step_log_likelihood(log_probs, step, EMBEDDING), log_probs.gather(-1, step.token[:, None]).squeeze(-1))


@pytest.mark.parametrize("rule", GREEDY_AT_ONE, ids=_name)
def test_reduces_to_greedy_discrete_decoding(rule):
    torch.manual_seed(0)
    log_probs = random_log_probs()
    step = rule.choose(log_probs, EMBEDDING)
    _assert_one_token_input(rule, step)
    assert torch.equal(step.token, log_probs.argmax(-1))
