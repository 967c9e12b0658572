"""The entropy bonus (TRL's entropy_coef and its adaptive form): the policy's entropy from the
likelihood pass, its share of the loss, the adaptive coefficient, and its state across a resume."""

import math

import pytest
import torch
from test_module import datamodule, trainer

from motg_lightning.grpo.entropy_bonus import EntropyBonus
from motg_lightning.grpo.likelihood import trajectory_log_likelihood
from motg_lightning.grpo.objective import Normalisers, micro_batch_loss
from motg_lightning.grpo.surrogates import PolicyTerm
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.options import GRPOOptions, RolloutOptions
from motg_lightning.models import TINY_MODEL
from motg_lightning.rollout.generate import generate
from motg_lightning.rules.paper import Dirichlet


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_the_likelihood_pass_gives_the_entropy_the_rollout_recorded(tiny_model, prompts, make_settings, chunk_size):
    torch.manual_seed(0)
    rule = Dirichlet(k=2)
    rollout = generate(tiny_model, rule, *prompts, make_settings(max_new_tokens=10, thinking_budget=3))
    scores = trajectory_log_likelihood(tiny_model, rule, rollout, chunk_size, with_entropy=True)
    mask = rollout.completion_mask
    torch.testing.assert_close(scores[..., 1][mask], rollout.entropy[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores[..., 0], trajectory_log_likelihood(tiny_model, rule, rollout, chunk_size))


def test_the_bonus_lowers_the_loss_by_the_coefficient_times_the_mean_thinking_entropy():
    mask = torch.tensor([[True, True, True], [True, True, False]])
    thinking = torch.tensor([[True, True, False], [True, False, False]])
    entropy = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]], requires_grad=True)
    normalisers = Normalisers(counted=mask.sum(), batch_tokens=mask.sum(), sequences=2, max_new_tokens=3, bonus_steps=thinking.sum())
    options = dict(term=PolicyTerm(loss_type="dapo"))
    zeros, advantages = torch.zeros(2, 3), torch.tensor([1.0, -1.0])
    plain = micro_batch_loss(zeros, zeros, None, advantages, mask, mask, normalisers, **options)
    part = micro_batch_loss(zeros, zeros, None, advantages, mask, mask, normalisers, **options,
                            entropy=entropy, bonus_mask=thinking, entropy_coef=0.1)
    assert part.policy_entropy.item() == pytest.approx(2.0), "mean of 1, 2 and 3 over the thinking steps"
    assert part.loss.item() == pytest.approx(plain.loss.item() - 0.1 * 2.0)
    part.loss.backward()
    torch.testing.assert_close(entropy.grad, -0.1 / 3 * thinking.float())


def test_the_adaptive_coefficient_follows_the_entropy_within_its_bounds():
    bonus = EntropyBonus(coef=0.01, adaptive=True, target=0.5, delta=0.01, coef_min=0.0, coef_max=0.02)
    assert bonus.enabled and bonus.applied == 0.0, "no bonus before the first measurement"
    bonus.observe(torch.tensor(0.3))  # below the target: applied, and raised
    assert bonus.applied == pytest.approx(0.02)
    bonus.observe(torch.tensor(0.2))
    assert bonus.coef == pytest.approx(0.02), "capped at coef_max"
    bonus.observe(torch.tensor(0.9))  # above: lowered, and not applied
    assert bonus.coef == pytest.approx(0.01) and bonus.applied == 0.0
    restored = EntropyBonus(adaptive=True)
    restored.load_state_dict(bonus.state_dict())
    assert restored.coef == pytest.approx(0.01) and restored.last_entropy == pytest.approx(0.9)
    fixed = EntropyBonus(coef=0.05)
    fixed.observe(torch.tensor(0.0))
    assert fixed.applied == 0.05 and math.isinf(fixed.last_entropy)
    assert not EntropyBonus().enabled


def test_training_logs_the_policy_entropy_and_a_resume_keeps_the_adaptive_state(tmp_path):
    grpo = GRPOOptions(num_generations=2, use_adaptive_entropy=True, entropy_coef=0.01, entropy_target=100.0)
    module = MoTGRPOModule(TINY_MODEL, grpo=grpo, rollout=RolloutOptions(max_new_tokens=6, thinking_budget=3))
    run = trainer(max_steps=2, default_root_dir=tmp_path)
    run.fit(module, datamodule())
    assert torch.isfinite(run.callback_metrics["train/policy_entropy"]) and run.callback_metrics["train/policy_entropy"] > 0
    assert module.entropy_bonus.coef == pytest.approx(0.02), "raised by delta (0.005) after each of the two steps"
    run.save_checkpoint(tmp_path / "adaptive.ckpt")
    resumed = MoTGRPOModule(TINY_MODEL, grpo=grpo, rollout=RolloutOptions(max_new_tokens=6, thinking_budget=3))
    trainer(max_steps=3, default_root_dir=tmp_path).fit(resumed, datamodule(), ckpt_path=tmp_path / "adaptive.ckpt")
    assert resumed.entropy_bonus.coef == pytest.approx(0.025), "from the saved 0.02, not the configured 0.01"


def test_impossible_settings_are_refused_naming_the_fields():
    with pytest.raises(ValueError, match=r"^model.grpo.entropy_coef=-1.0"):
        GRPOOptions(entropy_coef=-1.0)
    with pytest.raises(ValueError, match=r"entropy_coef_min=0.5, entropy_coef_max=0.1"):
        GRPOOptions(entropy_coef_min=0.5, entropy_coef_max=0.1)
