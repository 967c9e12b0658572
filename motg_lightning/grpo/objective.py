"""The GRPO loss of one micro-batch, as one pure function of log-likelihoods and advantages."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..collectives import gather_rows, mean_over_ranks
from ..rollout.record import Rollout
from .loss import (
    GLOBAL_TOKEN_MEAN, KL_LOG_RATIO_LIMIT, LossType, ScaleRewards, aggregate_loss, group_advantages, high_entropy_mask,
    k3_kl, token_mean,
)
from .latent_stabilisers import best_first_steps
from .surrogates import PolicyTerm, importance_log_weights, policy_loss


@dataclass(frozen=True)
class Normalisers:
    """What every micro-batch's loss of one step divides by, fixed before the first.

    Attributes:
        counted: steps of this process's batch that count (metrics are token means over them).
        batch_tokens: the loss's token count (for ``dapo``, every process's count divided by
            the number of processes, as gradients are averaged across them).
        sequences: rollouts of this process's batch.
        max_new_tokens: ``dr_grpo``'s per-sequence length.
        bonus_steps: steps of this process's batch the entropy bonus acts on.
    """

    counted: Tensor
    batch_tokens: Tensor
    sequences: int
    max_new_tokens: int
    bonus_steps: Tensor | int = 0


@dataclass(frozen=True)
class MicroBatchLoss:
    """``loss``: the micro-batch's differentiable share of the batch loss; ``clip_fraction``,
    ``kl`` (None without a reference) and ``policy_entropy`` (None without an entropy bonus): its
    detached shares of the batch's token means."""

    loss: Tensor
    clip_fraction: Tensor
    kl: Tensor | None
    policy_entropy: Tensor | None = None


def micro_batch_loss(
    log_likelihood: Tensor, old_log_likelihood: Tensor, reference_log_likelihood: Tensor | None, advantages: Tensor,
    loss_mask: Tensor, policy_mask: Tensor, normalisers: Normalisers, *, term: PolicyTerm, beta: float = 0.0,
    use_bias_correction_kl: bool = False, entropy: Tensor | None = None, bonus_mask: Tensor | None = None,
    entropy_coef: float = 0.0,
) -> MicroBatchLoss:
    """The policy term on the policy's steps (``policy_mask``), plus ``beta`` × k3 KL to the
    reference on every counted step (``loss_mask``), aggregated as TRL's ``term.loss_type``.

    All tensors are the micro-batch's rows: ``[n, T]`` step values and masks, ``[n]`` advantages.
    ``term`` gives the policy term (loss type, clip range, GSPO's sequence level, ``delta``, SAPO's
    and VESPO's settings; :mod:`motg_lightning.grpo.surrogates`). With ``use_bias_correction_kl``
    each step's KL is weighed by the importance ratio at the term's level (its log within ±20),
    gradient included, which makes the KL's gradient the unbiased reverse-KL gradient
    (DeepSeek-V3.2, arXiv 2512.02556; TRL's ``use_bias_correction_kl``).
    With ``entropy_coef``, the loss is lowered by ``entropy_coef`` × the mean of ``entropy`` (the
    policy's next-token entropy, differentiable) over the batch's ``bonus_mask`` steps: TRL's
    entropy bonus, on the thinking steps.
    """
    per_step, clipped = policy_loss(log_likelihood, old_log_likelihood, advantages, loss_mask, term)
    clipped = clipped.expand_as(loss_mask)
    per_step = per_step * policy_mask
    kl = None
    if reference_log_likelihood is not None:
        kl_per_step = k3_kl(log_likelihood, reference_log_likelihood)
        if use_bias_correction_kl:
            log_ratio = importance_log_weights(log_likelihood, old_log_likelihood, loss_mask, term.importance_sampling_level)
            kl_per_step = kl_per_step * torch.exp(log_ratio.clamp(-KL_LOG_RATIO_LIMIT, KL_LOG_RATIO_LIMIT))
        per_step = per_step + beta * kl_per_step
        kl = token_mean(kl_per_step.detach(), loss_mask, normalisers.counted)
    n = normalisers
    loss = aggregate_loss(per_step, loss_mask, term.loss_type, n.batch_tokens, n.sequences, n.max_new_tokens)
    bonus = None
    if entropy is not None:  # measured even at a coefficient of 0: the adaptive form needs it
        bonus = token_mean(entropy, bonus_mask, n.bonus_steps)
        loss = loss - entropy_coef * bonus
    return MicroBatchLoss(loss, token_mean(clipped.float(), loss_mask, n.counted), kl,
                          bonus.detach() if bonus is not None else None)


@dataclass(frozen=True)
class UpdateTargets:
    """What the update fits, fixed once per step: ``[N]`` advantages, the ``[N, T]`` steps that
    count (``loss_mask``), those the policy term trains on (``policy_mask``), the thinking steps
    an entropy bonus acts on (``bonus_mask``: the policy term's before ``best_first_step``
    narrows it), the normalisers."""

    advantages: Tensor
    loss_mask: Tensor
    policy_mask: Tensor
    normalisers: Normalisers
    bonus_mask: Tensor


def update_targets(
    rollout: Rollout, rewards: Tensor, *, group_size: int, scale_rewards: ScaleRewards, mask_truncated_completions: bool,
    loss_type: LossType, top_entropy_quantile: float, max_new_tokens: int, mask_invalid_advantages: bool = False,
    best_first_step: bool = False,
) -> UpdateTargets:
    """Group-normalised advantages of ``rewards`` (``[N]``, on the rollout's device), the steps
    that count and those the policy term trains on, with what the loss divides by; TRL's options,
    and Latent-GRPO's stabilisers (:mod:`.latent_stabilisers`): ``mask_invalid_advantages`` leaves
    truncated rollouts out of their group's statistics, at advantage 0; ``best_first_step`` trains
    each group's first step on its most likely positive rollout alone.

    Statistics TRL takes over the whole batch (the ``batch`` reward std, the entropy quantile, the
    ``dapo`` token count) are taken over every process's rows; groups need no other process."""
    valid = ~rollout.truncated if mask_invalid_advantages else None
    batch_rewards = gather_rows(rewards if valid is None else rewards[valid]) if scale_rewards == "batch" else None
    advantages = group_advantages(rewards, group_size, scale_rewards, batch_rewards=batch_rewards, valid=valid)
    loss_mask = rollout.loss_mask
    if mask_truncated_completions:
        loss_mask = loss_mask & ~rollout.truncated.unsqueeze(-1)
    counted = loss_mask.sum()
    batch_tokens = mean_over_ranks(counted.float()) if loss_type in GLOBAL_TOKEN_MEAN else counted
    batch_entropy = gather_rows(rollout.entropy[loss_mask].float()) if top_entropy_quantile < 1 else None
    policy_mask = high_entropy_mask(rollout.entropy, loss_mask, top_entropy_quantile, batch_entropy)
    bonus_mask = policy_mask & rollout.thinking
    if best_first_step:
        policy_mask = policy_mask.clone()
        policy_mask[:, 0] &= best_first_steps(advantages, rollout.log_likelihood, loss_mask, group_size)
    normalisers = Normalisers(counted, batch_tokens, loss_mask.shape[0], max_new_tokens, bonus_mask.sum())
    return UpdateTargets(advantages, loss_mask, policy_mask, normalisers, bonus_mask)


@dataclass(frozen=True)
class FixedLikelihoods:
    """``[N, T]`` step log-likelihoods computed before the first optimizer step: the ratio's
    denominator when several steps share the rollout (None: the live value, detached), and the
    reference model's (None without one)."""

    old: Tensor | None
    reference: Tensor | None


class UpdateTotals:
    """Sums over an update's micro-batches and optimizer steps; :meth:`averages` for logging."""

    def __init__(self, device: torch.device, with_kl: bool, with_entropy_bonus: bool = False):
        zero = torch.zeros((), device=device)
        self.sums = {"loss": zero, "clip_fraction": zero, "grad_norm": zero, **({"kl": zero} if with_kl else {}),
                     **({"policy_entropy": zero} if with_entropy_bonus else {})}
        self.skipped_updates, self.steps = zero, 0
        self.step_entropy: Tensor | None = None  # the entropy bonus's mean over the last optimizer step's micro-batches
        self._entropy_since_step: Tensor | None = None

    def add(self, part: MicroBatchLoss) -> None:
        self.sums["loss"] = self.sums["loss"] + part.loss.detach()
        self.sums["clip_fraction"] = self.sums["clip_fraction"] + part.clip_fraction
        if part.kl is not None:
            self.sums["kl"] = self.sums["kl"] + part.kl
        if part.policy_entropy is not None:
            self.sums["policy_entropy"] = self.sums["policy_entropy"] + part.policy_entropy
            self._entropy_since_step = part.policy_entropy + (0 if self._entropy_since_step is None else self._entropy_since_step)

    def add_step(self, gradient_norm: Tensor, applied: bool) -> None:
        self.sums["grad_norm"] = self.sums["grad_norm"] + gradient_norm
        self.skipped_updates = self.skipped_updates + (0 if applied else 1)
        self.steps += 1
        self.step_entropy, self._entropy_since_step = self._entropy_since_step, None

    def averages(self) -> dict[str, Tensor]:
        """Each sum over the optimizer steps' mean; skipped updates counted."""
        return {**{name: value / self.steps for name, value in self.sums.items()}, "skipped_updates": self.skipped_updates}
