"""The micro-batch loss as a pure function: micro-batches add up to the batch's loss."""

import pytest
import torch

from motg_lightning.grpo.loss import aggregate_loss, k3_kl, token_mean
from motg_lightning.grpo.surrogates import PolicyTerm, policy_loss
from motg_lightning.grpo.objective import Normalisers, micro_batch_loss

N, T = 6, 5


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    log_likelihood = -torch.rand(N, T, generator=generator)
    old = log_likelihood + 0.3 * torch.randn(N, T, generator=generator)
    reference = log_likelihood + 0.5 * torch.randn(N, T, generator=generator)
    advantages = torch.randn(N, generator=generator)
    mask = torch.rand(N, T, generator=generator) > 0.2
    policy = mask & (torch.rand(N, T, generator=generator) > 0.3)
    return log_likelihood, old, reference, advantages, mask, policy


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_micro_batches_add_up_to_the_batch_loss(loss_type):
    log_likelihood, old, reference, advantages, mask, policy = batch()
    normalisers = Normalisers(mask.sum(), mask.sum(), N, T)
    options = dict(term=PolicyTerm(loss_type=loss_type, epsilon=0.2, epsilon_high=0.28), beta=0.04)
    whole = micro_batch_loss(log_likelihood, old, reference, advantages, mask, policy, normalisers, **options)
    parts = [micro_batch_loss(log_likelihood[rows], old[rows], reference[rows], advantages[rows], mask[rows], policy[rows],
                              normalisers, **options) for rows in (slice(0, 4), slice(4, 6))]
    torch.testing.assert_close(sum(part.loss for part in parts), whole.loss)
    torch.testing.assert_close(sum(part.kl for part in parts), whole.kl)
    torch.testing.assert_close(sum(part.clip_fraction for part in parts), whole.clip_fraction)


def test_the_loss_is_the_clipped_surrogate_on_policy_steps_plus_beta_kl_on_counted_steps():
    log_likelihood, old, reference, advantages, mask, policy = batch(1)
    normalisers = Normalisers(mask.sum(), mask.sum(), N, T)
    result = micro_batch_loss(log_likelihood, old, reference, advantages, mask, policy, normalisers,
                              term=PolicyTerm(loss_type="bnpo"), beta=0.5)
    surrogate, clipped = policy_loss(log_likelihood, old, advantages, mask, PolicyTerm(epsilon=0.2, epsilon_high=0.2))
    kl = k3_kl(log_likelihood, reference)
    expected = aggregate_loss(surrogate * policy + 0.5 * kl, mask, "bnpo", mask.sum(), N, T)
    torch.testing.assert_close(result.loss, expected)
    torch.testing.assert_close(result.kl, token_mean(kl, mask))
    torch.testing.assert_close(result.clip_fraction, token_mean(clipped.float(), mask))


def test_without_a_reference_there_is_no_kl_and_the_gradient_flows_to_the_policy_only():
    log_likelihood, old, _, advantages, mask, policy = batch(2)
    log_likelihood.requires_grad_(True)
    result = micro_batch_loss(log_likelihood, old, None, advantages, mask, policy, Normalisers(mask.sum(), mask.sum(), N, T),
                              term=PolicyTerm(loss_type="dapo"))
    assert result.kl is None and not result.clip_fraction.requires_grad
    result.loss.backward()
    assert log_likelihood.grad[~policy].eq(0).all() and log_likelihood.grad[policy].ne(0).any()


def test_the_bias_corrected_kl_weighs_each_step_by_its_ratio_with_its_gradient():
    """TRL's ``use_bias_correction_kl``: on-policy the value is the plain KL's, and the gradient of
    β·ρ·kl per step is β(kl + ∂kl/∂ℓ) = β(kl + 1 − e^(ℓ_ref − ℓ)), over the n counted steps."""
    log_likelihood = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    reference = torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    normalisers = Normalisers(mask.sum(), mask.sum(), 1, 3)
    results = [micro_batch_loss(log_likelihood, log_likelihood.detach(), reference, torch.zeros(1), mask, mask, normalisers,
                                term=PolicyTerm(loss_type="dapo"), beta=0.5, use_bias_correction_kl=corrected)
               for corrected in (False, True)]
    torch.testing.assert_close(results[0].loss, results[1].loss)
    results[1].loss.backward()
    kl = k3_kl(log_likelihood.detach(), reference)
    torch.testing.assert_close(log_likelihood.grad, 0.5 * (kl + 1 - torch.exp(reference - log_likelihood.detach())) / 3)
