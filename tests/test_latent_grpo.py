"""Latent-GRPO (arXiv 2604.27998): its rule (motg_lightning/rules/related.py::LatentGRPO), its
Gumbel top-k log-density, and its two stabilisers of the advantages
(motg_lightning/grpo/latent_stabilisers.py), each against values worked out by hand."""

import math

import pytest
import torch

from motg_lightning.grpo.latent_stabilisers import best_first_steps
from motg_lightning.grpo.loss import group_advantages
from motg_lightning.grpo.objective import update_targets
from motg_lightning.rules.base import MixtureStep
from motg_lightning.rules.related import LatentGRPO

from helpers import EMBEDDING, random_log_probs


def test_scores_add_one_sided_bounded_noise_within_the_nucleus_and_mix_by_their_softmax():
    rule = LatentGRPO(k=3, gumbel_temperature=0.7, noise_scale=0.5, nucleus=0.5)
    torch.manual_seed(0)
    log_probs = random_log_probs(batch=256)
    step = rule.choose(log_probs, EMBEDDING)
    noise = step.extras["perturbed"] - log_probs.gather(-1, step.support)
    assert (noise >= -1e-6).all() and (noise <= 0.5 * 4.5 + 1e-6).all(), "g̃ = 0.5 (clamp(g, −1.5, 3) + 1.5) ∈ [0, 2.25]"
    torch.testing.assert_close(step.weights, torch.softmax(step.extras["perturbed"] / 0.7, -1))
    assert torch.equal(step.token, step.support[:, 0]) and (step.extras["perturbed"].argmax(-1) == 0).all()
    ordered = log_probs.sort(-1, descending=True)
    mass_before = ordered.values.exp().cumsum(-1) - ordered.values.exp()
    inside_sorted = (mass_before < 0.5) | (torch.arange(log_probs.shape[-1]) < 3)
    inside = torch.zeros_like(inside_sorted).scatter(-1, ordered.indices, inside_sorted)  # by token id
    assert inside.gather(-1, step.support).all(), "every slot is in the nucleus or the top k"
    assert (~inside).any(), "the nucleus left tokens out"


def test_the_density_is_the_mean_standard_gumbel_log_density_of_each_slot_s_implied_noise():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    step = MixtureStep(torch.tensor([[1, 0]]), torch.tensor([[0.6, 0.4]]), torch.tensor([1]),
                       {"perturbed": torch.tensor([[math.log(0.3) + 1.0, math.log(0.5) + 0.25]])})
    value = LatentGRPO(k=2).step_log_likelihood(log_probs, step, EMBEDDING)
    expected = ((-1.0 - math.exp(-1.0)) + (-0.25 - math.exp(-0.25))) / 2
    assert value.item() == pytest.approx(expected)


def test_invalid_rollouts_get_no_advantage_and_stay_out_of_their_group_s_statistics():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.5, 2.0, 0.0, 0.0, 0.0])
    valid = torch.tensor([True, True, False, True, True, False, False, False])
    advantages = group_advantages(rewards, 4, "group", valid=valid)
    # group 1: valid rewards 1, 0, 0.5: mean 0.5, unbiased std 0.5; group 2: one valid member, mean 0 and std 1
    expected = torch.tensor([0.5 / (0.5 + 1e-4), -0.5 / (0.5 + 1e-4), 0.0, 0.0, 2.0 / (1 + 1e-4), 0.0, 0.0, 0.0])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(group_advantages(rewards, 4, "none", valid=valid)[:4], torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_only_the_most_likely_positive_rollout_of_a_group_trains_its_first_step():
    advantages = torch.tensor([1.0, 0.5, -1.0, -0.5, -1.0, 1.0, 0.0, 0.0])
    log_likelihood = torch.tensor([[-2.0, -2.0], [-1.0, -9.0], [0.0, 0.0], [0.0, 0.0],
                                   [-1.0, -1.0], [-3.0, -3.0], [-1.0, -1.0], [-1.0, -1.0]])
    mask = torch.tensor([[True, True], [True, False]] + [[True, True]] * 6)
    # group 1: positive rows 0 (mean −2) and 1 (mean −1 over its one counted step): row 1; group 2: row 5 alone
    assert best_first_steps(advantages, log_likelihood, mask, 4).tolist() == [False, True, False, False,
                                                                               False, True, False, False]
    assert best_first_steps(-advantages.abs(), log_likelihood, mask, 4).all(), "no positive rollout: all train"
    uncounted = mask.clone()
    uncounted[1] = False  # a rollout with no counted step (say, masked as truncated) is no candidate
    assert best_first_steps(advantages, log_likelihood, uncounted, 4)[:4].tolist() == [True, False, False, False]


def test_update_targets_apply_both_stabilisers(tiny_model, prompts, make_settings):
    from motg_lightning.rollout.generate import generate

    torch.manual_seed(0)
    rollout = generate(tiny_model, LatentGRPO(k=3), *prompts, make_settings(max_new_tokens=6, thinking_budget=3))
    rollout.truncated[:] = torch.tensor([True, False, False, False, False, True])
    rewards = torch.tensor([5.0, 1.0, 0.0, 1.0, 0.0, 5.0])
    options = dict(group_size=3, scale_rewards="group", mask_truncated_completions=False, loss_type="dapo",
                   top_entropy_quantile=1.0, max_new_tokens=6)
    plain = update_targets(rollout, rewards, **options)
    stabilised = update_targets(rollout, rewards, **options, mask_invalid_advantages=True, best_first_step=True)
    assert plain.advantages[0] > 0 and stabilised.advantages[[0, 5]].eq(0).all()
    # group 1 without row 0: rewards 1 and 0, mean 0.5, unbiased std √0.5; group 2 without row 5 likewise
    std = math.sqrt(0.5)
    torch.testing.assert_close(stabilised.advantages[1:5], torch.tensor([0.5, -0.5, 0.5, -0.5]) / (std + 1e-4))
    winners = torch.tensor([False, True, False, True, False, False])  # one positive rollout per group: rows 1 and 3
    assert torch.equal(stabilised.policy_mask[:, 0], plain.policy_mask[:, 0] & winners)
    assert torch.equal(stabilised.policy_mask[:, 1:], plain.policy_mask[:, 1:])



def test_batch_scaling_over_one_valid_rollout_divides_by_one_not_by_nan(tiny_model, prompts, make_settings):
    from motg_lightning.rollout.generate import generate

    torch.manual_seed(0)
    rollout = generate(tiny_model, LatentGRPO(k=3), *prompts, make_settings(max_new_tokens=4))
    rollout.truncated[:] = torch.tensor([True, True, True, True, True, False])
    targets = update_targets(rollout, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 2.0]), group_size=3, scale_rewards="batch",
                             mask_truncated_completions=False, loss_type="dapo", top_entropy_quantile=1.0, max_new_tokens=4,
                             mask_invalid_advantages=True)
    # the lone valid rollout: its group's mean 0 (at most one valid member), the batch's std 1 (one valid reward)
    torch.testing.assert_close(targets.advantages, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 2.0 / (1 + 1e-4)]))


EMBEDDING_WIDE = torch.nn.Embedding(4096, 8)  # the rule reads only its width


def test_peaked_rows_take_the_same_top_k_without_sorting_the_vocabulary():
    """On a CPU, when no token past the 256 most probable can reach the top k, the rule scores
    those alone; one flat row sends the whole batch through the full sort. The noise is drawn over
    the whole vocabulary either way, so the peaked rows must come out the same."""
    rule = LatentGRPO(k=10)
    generator = torch.Generator().manual_seed(3)
    peaked = torch.log_softmax(8.0 * torch.randn(6, 4096, generator=generator), -1)
    flat = torch.log_softmax(0.1 * torch.randn(1, 4096, generator=generator), -1)
    assert rule._candidate_scores(peaked, torch.zeros_like(peaked)) is not None, "the peaked rows alone take the shortcut"
    assert rule._candidate_scores(torch.cat([peaked, flat]), torch.zeros(7, 4096)) is None, "the flat row sorts"
    torch.manual_seed(0)
    alone = rule.choose(peaked, EMBEDDING_WIDE)
    torch.manual_seed(0)
    with_flat = rule.choose(torch.cat([peaked, flat]), EMBEDDING_WIDE)
    assert torch.equal(alone.support, with_flat.support[:6])
    torch.testing.assert_close(alone.extras["perturbed"], with_flat.extras["perturbed"][:6], rtol=0, atol=0)
    assert torch.isfinite(with_flat.extras["perturbed"][6]).all(), "the flat row's nucleus holds far more than 10 tokens"

