import pytest
import torch

from motg_lightning.rules.paper import Dirichlet
from motg_lightning.rules.base import MixtureStep
from motg_lightning.rules.related import Gumbel, Multiplex, gumbel_log_density

from helpers import EMBEDDING


def test_gumbel_density_agrees_with_torch_distributions():
    values, location = torch.randn(5, 3), torch.randn(5, 3)
    expected = torch.distributions.Gumbel(location, torch.ones(5, 3)).log_prob(values)
    torch.testing.assert_close(gumbel_log_density(values, location), expected)


def test_gumbel_representative_is_a_sample_of_the_renormalised_top_k():
    torch.manual_seed(0)
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    step = Gumbel(k=3, temperature=1.0).choose(log_probs, EMBEDDING)
    frequencies = torch.bincount(step.token, minlength=4).float() / 20000
    torch.testing.assert_close(frequencies[:3], torch.tensor([0.5, 0.3, 0.15]) / 0.95, atol=0.015, rtol=0)


def test_gumbel_likelihood_is_the_density_of_the_recorded_perturbation():
    torch.manual_seed(0)
    rule = Gumbel(k=3, temperature=1.0)
    logits = torch.randn(4, 10, requires_grad=True)
    step = rule.choose(rule.log_probs(logits).detach(), EMBEDDING)
    value = rule.step_log_likelihood(rule.log_probs(logits), step, EMBEDDING)
    location = torch.log_softmax(torch.log_softmax(logits, -1).gather(-1, step.support), -1)
    expected = torch.distributions.Gumbel(location, torch.ones_like(location)).log_prob(step.extras["perturbed"]).sum(-1)
    torch.testing.assert_close(value, expected)
    value.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_multiplex_with_one_sample_is_ordinary_sampling():
    torch.manual_seed(0)
    log_probs = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).expand(20000, 3)
    rule = Multiplex(k=1, temperature=1.0)
    step = rule.choose(log_probs, EMBEDDING)
    assert (step.weights == 1).all() and torch.equal(step.token, step.support[:, 0])
    frequencies = torch.bincount(step.token, minlength=3).float() / 20000
    torch.testing.assert_close(frequencies, torch.tensor([0.6, 0.3, 0.1]), atol=0.015, rtol=0)
    torch.testing.assert_close(rule.step_log_likelihood(log_probs, step, EMBEDDING), log_probs.gather(-1, step.token[:, None]).squeeze(-1))


def test_multiplex_likelihood_sums_the_draws_log_probabilities():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    step = MixtureStep(torch.tensor([[0, 0, 2]]), torch.full((1, 3), 1 / 3), torch.tensor([0]))
    torch.testing.assert_close(Multiplex(k=3).step_log_likelihood(log_probs, step, EMBEDDING), torch.log(torch.tensor([0.5 * 0.5 * 0.2])))


def test_dirichlet_density_agrees_with_the_closed_form():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    rule = Dirichlet(k=2, alpha=2.0, likelihood="density", temperature=1.0)
    step = MixtureStep(torch.tensor([[0, 1]]), torch.tensor([[0.7, 0.3]]), torch.tensor([0]))
    a, b = 2.0 * 0.625, 2.0 * 0.375
    lgamma = lambda x: torch.lgamma(torch.tensor(x))
    expected = lgamma(a + b) - lgamma(a) - lgamma(b) + (a - 1) * torch.log(torch.tensor(0.7)) + (b - 1) * torch.log(torch.tensor(0.3))
    torch.testing.assert_close(rule.step_log_likelihood(log_probs, step, EMBEDDING), expected.reshape(1))


def test_dirichlet_density_is_finite_for_one_hot_weights():
    logits = torch.randn(3, 8, requires_grad=True)
    rule = Dirichlet(k=2, likelihood="density")
    step = MixtureStep(torch.tensor([[1, 2]] * 3), torch.tensor([[1.0, 0.0]] * 3), torch.tensor([1] * 3))
    value = rule.step_log_likelihood(rule.log_probs(logits), step, EMBEDDING)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("make, field", [(lambda: Gumbel(gumbel_temperature=0.0), "gumbel_temperature"),
                                         (lambda: Multiplex(weighting="x"), "weighting"),
                                         (lambda: Multiplex(likelihood="density"), "likelihood")])
def test_invalid_options_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
