import pytest
import torch

from motg_lightning.grpo.surrogates import PolicyTerm, policy_loss
from motg_lightning.grpo.loss import (
    aggregate_loss,
    group_advantages,
    high_entropy_mask,
    k3_kl,
    sync_reference,
    token_mean,
    zero_variance_groups,
)


def test_group_advantages_on_hand_numbers():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])
    advantages = group_advantages(rewards, group_size=2, eps=0.0)
    std = torch.tensor([1.0, 0.0]).std()  # sample std of (1, 0) = 0.7071
    torch.testing.assert_close(advantages[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / std)
    assert group_advantages(rewards, 2)[4:].abs().max() == 0, "equal rewards give no signal"


def test_advantage_scaling_options():
    rewards = torch.tensor([3.0, 1.0, 0.0, 0.0])
    torch.testing.assert_close(group_advantages(rewards, 2, "none"), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    torch.testing.assert_close(group_advantages(rewards, 2, "batch", eps=0.0), torch.tensor([1.0, -1.0, 0.0, 0.0]) / rewards.std())


def test_batch_scaling_divides_by_the_std_of_the_whole_batch_it_is_given():
    """Another process's rewards (TRL gathers every process's before scaling by the batch's std)."""
    mine, theirs = torch.tensor([3.0, 1.0, 0.0, 0.0]), torch.tensor([10.0, 0.0])
    whole = torch.cat([mine, theirs])
    advantages = group_advantages(mine, 2, "batch", eps=0.0, batch_rewards=whole)
    torch.testing.assert_close(advantages, torch.tensor([1.0, -1.0, 0.0, 0.0]) / whole.std())


def test_rewards_that_do_not_split_into_groups_are_rejected():
    with pytest.raises(ValueError, match="num_generations=4"):
        group_advantages(torch.zeros(6), 4)


def test_zero_variance_groups():
    assert zero_variance_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [True, False]


def test_surrogate_clips_on_hand_numbers():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    every, term = torch.ones_like(new, dtype=torch.bool), PolicyTerm(epsilon=0.2, epsilon_high=0.28)
    loss, clipped = policy_loss(new, old, torch.tensor([1.0]), every, term)
    torch.testing.assert_close(loss, -torch.tensor([[1.28, 0.5, 1.1]]))
    assert clipped.tolist() == [[True, False, False]]
    loss, clipped = policy_loss(new, old, torch.tensor([-1.0]), every, term)
    torch.testing.assert_close(loss, torch.tensor([[1.5, 0.8, 1.1]]))
    assert clipped.tolist() == [[False, True, False]]


def test_surrogate_gradient_at_ratio_one_is_minus_the_advantage():
    log_likelihood = torch.zeros(1, 2, requires_grad=True)
    loss, _ = policy_loss(log_likelihood, log_likelihood.detach(), torch.tensor([2.0]), torch.ones(1, 2, dtype=torch.bool), PolicyTerm())
    loss.sum().backward()
    torch.testing.assert_close(log_likelihood.grad, torch.full((1, 2), -2.0))


def test_k3_kl_is_bounded_when_density_likelihoods_drift_apart():
    """Per-step log-densities (Dirichlet with likelihood=density) reach tens of nats; the k3 term
    is clamped as verl's low_var_kl does instead of exploding (exp(80) ≈ 5.5e34)."""
    policy = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0], requires_grad=True)
    reference = torch.tensor([80.0, -80.0, 200.0, 0.5, -0.5])
    kl = k3_kl(policy, reference)
    assert torch.isfinite(kl).all() and (kl <= 10.0).all() and (kl >= 0).all()
    exact = torch.exp(reference[3:]) - reference[3:] - 1  # small drifts keep the exact estimator
    torch.testing.assert_close(kl[3:], exact)
    kl.sum().backward()
    assert torch.isfinite(policy.grad).all()


def test_k3_kl_is_zero_when_policy_equals_reference_and_positive_otherwise():
    values = torch.randn(4, 5)
    assert k3_kl(values, values).abs().max() == 0
    kl = k3_kl(torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25])))
    torch.testing.assert_close(kl, torch.tensor([0.5 - torch.log(torch.tensor(0.5)) - 1]))
    assert (k3_kl(values, values + torch.randn(4, 5)) >= 0).all()


def test_token_mean_over_micro_batches_adds_up_to_the_batch_mean():
    values, mask = torch.arange(8.0).reshape(2, 4), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool()
    whole = token_mean(values, mask)
    parts = token_mean(values[:1], mask[:1], mask.sum()) + token_mean(values[1:], mask[1:], mask.sum())
    torch.testing.assert_close(whole, torch.tensor((0 + 1 + 4 + 5 + 6 + 7) / 6))
    torch.testing.assert_close(parts, whole)


LOSSES = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).bool()


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", (2.0 + 4.0) / 2),      # sequence means 2 and 4, averaged
    ("bnpo", 10.0 / 4),             # all four counted steps
    ("dapo", 10.0 / 4),
    ("dr_grpo", 10.0 / (2 * 8)),    # 2 sequences x max_new_tokens 8
])
def test_loss_aggregations_on_hand_numbers(loss_type, expected):
    value = aggregate_loss(LOSSES, MASK, loss_type, batch_tokens=MASK.sum(), batch_sequences=2, max_new_tokens=8)
    torch.testing.assert_close(value, torch.tensor(expected))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_micro_batch_shares_add_up_to_the_batch_loss(loss_type):
    whole = aggregate_loss(LOSSES, MASK, loss_type, MASK.sum(), 2, 8)
    parts = sum(aggregate_loss(LOSSES[i : i + 1], MASK[i : i + 1], loss_type, MASK.sum(), 2, 8) for i in range(2))
    torch.testing.assert_close(parts, whole)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_uneven_micro_batches_add_up_to_the_batch_loss(loss_type):
    """Five rollouts in micro-batches of two: the last one holds a single rollout."""
    losses = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    whole = aggregate_loss(losses, mask, loss_type, mask.sum(), 5, 4)
    parts = sum(aggregate_loss(losses[i : i + 2], mask[i : i + 2], loss_type, mask.sum(), 5, 4) for i in range(0, 5, 2))
    torch.testing.assert_close(parts, whole)


def test_unknown_loss_type_is_rejected():
    with pytest.raises(ValueError, match="loss_type='ppo'"):
        aggregate_loss(LOSSES, MASK, "ppo", MASK.sum(), 2, 8)


def test_high_entropy_mask_keeps_the_top_quantile_of_counted_steps():
    entropy = torch.tensor([[0.1, 0.9, 0.5, 5.0], [0.7, 9.0, 9.0, 9.0]])
    kept = high_entropy_mask(entropy, MASK, top_entropy_quantile=0.5)
    assert kept.tolist() == [[False, True, False, False], [True, False, False, False]]
    assert torch.equal(high_entropy_mask(entropy, MASK, 1.0), MASK)


def test_high_entropy_threshold_is_taken_over_the_whole_batch_it_is_given():
    """Another process's steps all have higher entropy: the median of both keeps none of these."""
    entropy = torch.tensor([[0.1, 0.9, 0.5, 5.0], [0.7, 9.0, 9.0, 9.0]])
    whole = torch.cat([entropy[MASK], torch.full((5,), 20.0)])
    assert not high_entropy_mask(entropy, MASK, 0.5, batch_entropy=whole).any()


def test_sync_reference_mixes_parameters():
    policy, reference = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    expected = [0.4 * r.detach() + 0.6 * p.detach() for r, p in zip(reference.parameters(), policy.parameters())]
    sync_reference(reference, policy, alpha=0.6)
    for value, target in zip(reference.parameters(), expected):
        torch.testing.assert_close(value, target)


def test_the_entropy_quantile_matches_torch_and_takes_more_values_than_torch_quantile_allows():
    """Gathered over every rank, the counted steps' entropies can pass torch.quantile's 2**24 limit."""
    from motg_lightning.grpo.loss import linear_quantile

    values = torch.randn(1001)
    for q in (0.0, 0.2, 0.5, 0.8, 0.999, 1.0):
        torch.testing.assert_close(linear_quantile(values, q), torch.quantile(values, q))
    many = torch.rand(2**24 + 1)
    mask = torch.ones(1, 2**24 + 1, dtype=torch.bool)
    kept = high_entropy_mask(many.view(1, -1), mask, 0.5, batch_entropy=many)
    assert abs(kept.float().mean().item() - 0.5) < 1e-3
