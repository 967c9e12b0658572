"""The policy term of the loss, per step, in each form TRL 1.16's ``GRPOTrainer`` offers.

Every form weighs the advantage ``A`` by an importance ratio ``ρ = π/π_old`` of the recorded
steps (for a mixture step, the ratio of the rule's step likelihoods):

* ``importance_sampling_level``: ``token`` uses each step's ratio; ``sequence`` uses one ratio
  per rollout, the geometric mean of its step ratios over the counted steps (GSPO, Zheng et al.,
  arXiv 2507.18071), which keeps large per-step log-ratios of mixture densities from dominating.
* the clipped loss types (``grpo``, ``bnpo``, ``dr_grpo``, ``dapo``, ``luspo``):
  ``−min(ρA, clip(ρ, 1−ε, 1+ε_high) A)``; with ``delta`` the unclipped ratio is also capped at
  ``delta`` (two-sided clipping, INTELLECT-2, arXiv 2505.07291).
* ``cispo``: ``−sg(min(ρ, ε_high)) · A · ℓ``, the clipped ratio as a stop-gradient weight of the
  step log-likelihood ``ℓ``, so no step loses its gradient (MiniMax-M1, arXiv 2506.13585).
* ``sapo``: ``−σ(τ (ρ − 1)) · 4/τ · A``, a smooth gate in place of the hard clip, ``τ`` apart for
  positive and other advantages (Soft Adaptive Policy Optimization, arXiv 2511.20347).
* ``vespo``: ``−sg(φ(w)) · A · ℓ`` with ``w`` the rollout's whole importance weight (the product
  of its step ratios) and ``φ(w) = e^λ w^k e^{−λw}``, a Gamma-shaped weight with ``φ(1) = 1``
  that fades both stale (``w ≪ 1``) and runaway (``w ≫ 1``) rollouts; ``k`` and ``λ`` apart for
  non-negative and negative advantages (VESPO, arXiv 2602.10693). It is always sequence-level.

How the per-step values are aggregated is :func:`motg_lightning.grpo.loss.aggregate_loss`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import math

import torch
from torch import Tensor

ImportanceSamplingLevel = Literal["token", "sequence"]
#: the loss types whose policy term is the clipped surrogate
CLIPPED = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")


@dataclass(frozen=True)
class PolicyTerm:
    """The settings of the policy term (TRL's names; see the module docstring).

    Attributes:
        loss_type: one of TRL's loss types.
        importance_sampling_level: `token` or `sequence` (GSPO).
        epsilon, epsilon_high: the clip range ``[1 − ε, 1 + ε_high]``; for `cispo`, `epsilon_high`
            is the cap of the ratio itself.
        delta: the cap of the unclipped ratio (two-sided clipping); None: none.
        sapo_temperature_pos, sapo_temperature_neg: `sapo`'s τ for positive and other advantages.
        vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg: `vespo`'s ``k`` and ``λ``
            for non-negative and negative advantages (TRL's defaults).
    """

    loss_type: str = "dapo"
    importance_sampling_level: ImportanceSamplingLevel = "token"
    epsilon: float = 0.2
    epsilon_high: float = 0.2
    delta: float | None = None
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0


def importance_log_weights(log_likelihood: Tensor, old_log_likelihood: Tensor, mask: Tensor, level: ImportanceSamplingLevel) -> Tensor:
    """``[n, T]`` per-step log-ratios (``token``), or ``[n, 1]`` their mean over ``mask`` (``sequence``)."""
    log_ratio = log_likelihood - old_log_likelihood
    if level == "token":
        return log_ratio
    if level == "sequence":
        return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp_min(1)).unsqueeze(-1)
    raise ValueError(f"model.grpo.importance_sampling_level={level!r}: choose token or sequence.")


#: VESPO's bounds of a step's log-ratio and of the rollout's log-weight (TRL's, as the paper's code)
VESPO_STEP_LOG_RATIO_LIMIT, VESPO_LOG_WEIGHT_RANGE = 20.0, (math.log(1e-8), 20.0)


@torch.no_grad()
def gamma_weights(log_likelihood: Tensor, old_log_likelihood: Tensor, advantages: Tensor, mask: Tensor, term: PolicyTerm) -> Tensor:
    """``[n, 1]`` VESPO's ``φ(w) = exp(λ + k log w − λ w)`` of each rollout's importance weight
    ``log w = Σ_t (ℓ_t − ℓ_old,t)`` over its counted steps (step log-ratios within ±20, ``log w``
    within [log 1e-8, 20]); ``k``, ``λ`` by the sign of ``[n, 1]`` advantages; without gradient."""
    step_log_ratio = (log_likelihood - old_log_likelihood).clamp(-VESPO_STEP_LOG_RATIO_LIMIT, VESPO_STEP_LOG_RATIO_LIMIT)
    log_weight = (step_log_ratio * mask).sum(-1, keepdim=True).clamp(*VESPO_LOG_WEIGHT_RANGE)
    non_negative = advantages >= 0
    k = torch.where(non_negative, term.vespo_k_pos, term.vespo_k_neg)
    rate = torch.where(non_negative, term.vespo_lambda_pos, term.vespo_lambda_neg).clamp_min(1e-4)
    return torch.exp(rate + k * log_weight - rate * log_weight.exp()).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def policy_loss(
    log_likelihood: Tensor, old_log_likelihood: Tensor, advantages: Tensor, mask: Tensor, term: PolicyTerm,
) -> tuple[Tensor, Tensor]:
    """Per-step policy loss and where clipping acted, each ``[n, T]`` (or ``[n, 1]`` at the
    sequence level, which broadcasts over the steps).

    Args:
        log_likelihood, old_log_likelihood: ``[n, T]`` step log-likelihoods ``ℓ`` and ``ℓ_old``.
        advantages: ``[n]``, broadcast over steps.
        mask: ``[n, T]`` the counted steps (the sequence-level mean is taken over them).
    """
    if term.loss_type == "vespo":  # its own sequence-level weight, whatever the level
        weight = gamma_weights(log_likelihood, old_log_likelihood, advantages.unsqueeze(-1), mask, term)
        return -weight * advantages.unsqueeze(-1) * log_likelihood, torch.zeros_like(weight, dtype=torch.bool)
    ratio = torch.exp(importance_log_weights(log_likelihood, old_log_likelihood, mask, term.importance_sampling_level))
    advantages = advantages.unsqueeze(-1)
    if term.loss_type == "cispo":
        weight = torch.clamp(ratio, max=term.epsilon_high).detach()
        return -weight * advantages * log_likelihood, (ratio > term.epsilon_high) & (advantages > 0)
    if term.loss_type == "sapo":
        temperature = torch.where(advantages > 0, term.sapo_temperature_pos, term.sapo_temperature_neg)
        gate = torch.sigmoid(temperature * (ratio - 1)) * 4 / temperature
        return -gate * advantages, torch.zeros_like(ratio, dtype=torch.bool)
    if term.loss_type not in CLIPPED:
        raise ValueError(f"model.grpo.loss_type={term.loss_type!r}: not a loss type of this library.")
    clipped = torch.clamp(ratio, 1 - term.epsilon, 1 + term.epsilon_high) * advantages
    capped = ratio if term.delta is None else torch.clamp(ratio, max=term.delta)
    unclipped = capped * advantages
    return -torch.min(unclipped, clipped), clipped < unclipped
