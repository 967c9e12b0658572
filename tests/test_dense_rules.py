import math

import pytest
import torch

from motg_lightning.rules.dense import Gaussian, MixtureOfInputs, embedding_rms, normalised_entropy
from motg_lightning.rules.base import MixtureStep

from helpers import EMBEDDING, VOCAB, random_log_probs


def test_gaussian_input_is_the_tempered_mean_plus_noise_of_the_requested_scale():
    torch.manual_seed(0)
    rule = Gaussian(k=VOCAB, temperature=1.0, thinking_temperature=0.5, noise_scale=0.33)
    log_probs = random_log_probs(batch=4000)
    step = rule.choose(log_probs, EMBEDDING)
    think = torch.softmax(2 * log_probs, -1)  # τ / τ_think = 2; k = V: the exact p·E
    mean = think @ EMBEDDING.weight
    noise = rule.embed(EMBEDDING, step) - mean
    torch.testing.assert_close(step.weights.sum(-1), torch.ones(4000))
    sigma = 0.33 * EMBEDDING.weight.pow(2).mean().sqrt()
    torch.testing.assert_close(noise.std(), sigma, atol=0.01, rtol=0.02)
    torch.testing.assert_close(step.extras["sigma"], sigma.expand(4000))


def test_gaussian_density_agrees_with_torch_distributions_and_has_gradients():
    torch.manual_seed(1)
    rule = Gaussian(k=6, temperature=1.0)
    logits = torch.randn(5, VOCAB, requires_grad=True)
    step = rule.choose(rule.log_probs(logits).detach(), EMBEDDING)
    fresh = torch.randn(5, VOCAB)  # an updated policy: a different mean
    value = rule.step_log_likelihood(rule.log_probs(fresh), step, EMBEDDING)
    seen = rule.embed(EMBEDDING, step)
    policy_mean = rule.embed(EMBEDDING, MixtureStep(step.support, rule._mean_weights(rule.log_probs(fresh), step.support), step.token,
                                                   {"noise": torch.zeros_like(step.extras["noise"])}))
    expected = torch.distributions.Normal(policy_mean, step.extras["sigma"][:, None]).log_prob(seen).sum(-1)
    torch.testing.assert_close(value, expected, atol=1e-3, rtol=1e-4)
    rule.step_log_likelihood(rule.log_probs(logits), step, EMBEDDING).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_gaussian_density_gradient_is_the_score_function_of_the_mean():
    """The sampled input e is data: at θ = θ_old, ∂/∂E[v] log N(e; μ, σ²I) with μ = Σ p̃_i E[S_i]
    is Σ_{steps, i: S_i = v} p̃_i (e − μ) / σ², with e − μ the recorded noise. (Rebuilding e from
    the current weights made this exactly zero.)"""
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(VOCAB, 8)
    rule = Gaussian(k=4)
    log_probs = random_log_probs(batch=16)
    step = rule.choose(log_probs, embedding)
    rule.step_log_likelihood(log_probs, step, embedding).sum().backward()

    sigma = step.extras["sigma"][:, None, None]
    per_slot = step.weights.unsqueeze(-1) * step.extras["noise"].unsqueeze(1) / sigma**2  # [N, k, D]
    expected = torch.zeros_like(embedding.weight).index_add_(0, step.support.reshape(-1), per_slot.reshape(-1, 8))
    assert expected.norm() > 0
    torch.testing.assert_close(embedding.weight.grad, expected, atol=1e-4, rtol=1e-4)


def test_fuzzy_gaussian_without_noise_feeds_the_top_token():
    rule = Gaussian(k=4, thinking_temperature=1e-7, noise_scale=0.0, likelihood="representative")
    log_probs = random_log_probs(batch=32)
    step = rule.choose(log_probs, EMBEDDING)
    top = log_probs.argmax(-1)
    torch.testing.assert_close(rule.embed(EMBEDDING, step), EMBEDDING(top))
    assert torch.equal(step.token, top)


def test_embedding_rms_is_measured_again_after_an_update():
    embedding = torch.nn.Embedding(10, 4)
    rule = Gaussian(k=2, noise_scale=1.0)
    before = rule._sigma(embedding)
    with torch.no_grad():
        embedding.weight.mul_(2)
    torch.testing.assert_close(rule._sigma(embedding), 2 * before)
    torch.testing.assert_close(before, embedding_rms(embedding) / 2)


def test_mixture_of_inputs_blend_on_hand_numbers():
    probs = torch.tensor([[0.5, 0.25, 0.25]])
    log_probs = probs.log()
    torch.manual_seed(0)
    step = MixtureOfInputs(k=3, beta=1.0, temperature=1.0).choose(log_probs, EMBEDDING)
    entropy = -(probs * log_probs).sum() / math.log(3)
    expected = torch.cat([(2 - entropy).reshape(1), entropy * probs[0]]) / 2
    torch.testing.assert_close(step.weights[0], expected)
    assert step.support[0, 0] == step.token[0] and step.support[0, 1:].tolist() == [0, 1, 2]
    torch.testing.assert_close(normalised_entropy(log_probs), entropy.reshape(1))


def test_mixture_of_inputs_samples_its_token_from_p_and_scores_it():
    torch.manual_seed(0)
    log_probs = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).expand(20000, 3)
    rule = MixtureOfInputs(k=2, temperature=1.0)
    step = rule.choose(log_probs, EMBEDDING)
    frequencies = torch.bincount(step.token, minlength=3).float() / 20000
    torch.testing.assert_close(frequencies, torch.tensor([0.6, 0.3, 0.1]), atol=0.015, rtol=0)
    torch.testing.assert_close(rule.step_log_likelihood(log_probs, step, EMBEDDING), log_probs.gather(-1, step.token[:, None]).squeeze(-1))


@pytest.mark.parametrize("make, field", [(lambda: Gaussian(thinking_temperature=0), "thinking_temperature"),
                                         (lambda: Gaussian(noise_scale=-1), "noise_scale"),
                                         (lambda: Gaussian(noise_scale=0), "noise_scale=0"),
                                         (lambda: MixtureOfInputs(beta=-1), "beta"),
                                         (lambda: MixtureOfInputs(likelihood="weighted"), "likelihood")])
def test_invalid_options_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
