"""GRPO on mixture trajectories, as pure functions (Shao et al., DeepSeekMath, arXiv 2402.03300;
TRL's parameter names). Shapes: ``N`` rollouts, ``T`` steps; groups are consecutive rows."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

ScaleRewards = Literal["group", "batch", "none"]
LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"]
#: the loss types whose token mean counts the steps of every process (gradients are averaged across them)
GLOBAL_TOKEN_MEAN = ("dapo", "cispo", "vespo")


def group_advantages(
    rewards: Tensor, group_size: int, scale_rewards: ScaleRewards = "group", eps: float = 1e-4,
    batch_rewards: Tensor | None = None, valid: Tensor | None = None,
) -> Tensor:
    """``A_g = (R_g − mean_G(R)) / (std_G(R) + eps)``, one value per rollout.

    Args:
        rewards: ``[N]`` rewards, ``N`` a multiple of ``group_size``, groups consecutive.
        scale_rewards: divide by the group's std (``group``, GRPO), the batch's std (``batch``)
            or not at all (``none``, Dr. GRPO, arXiv 2503.20783).
        batch_rewards: the rewards of the whole batch whose std ``batch`` divides by: every
            process's, as TRL gathers them before computing advantages; default ``rewards``. Fewer
            than two divide by 1.
        valid: ``[N]`` the rollouts the group statistics run over (Latent-GRPO's invalid-sample
            masking, :mod:`.latent_stabilisers`); the others get advantage 0, and a group with at
            most one valid rollout has mean 0 and std 1, as that paper's code. None: every rollout.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of num_generations={group_size}.")
    grouped = rewards.reshape(-1, group_size)
    if valid is None:
        centred = (grouped - grouped.mean(-1, keepdim=True)).reshape(-1)
        group_std = grouped.std(-1).repeat_interleave(group_size)
    else:
        centred, group_std = valid_group_statistics(grouped, valid.reshape(-1, group_size))
    if scale_rewards == "group":
        return centred / (group_std + eps)
    if scale_rewards == "batch":
        whole = rewards if batch_rewards is None else batch_rewards
        return centred / ((whole.std() if whole.numel() > 1 else whole.new_ones(())) + eps)
    return centred


def valid_group_statistics(grouped: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """``[N]`` rewards centred on their group's valid mean (0 where not valid) and ``[N]`` that
    group's unbiased std over its valid rewards (as ``torch.std``); a group with at most one valid
    reward has mean 0 and std 1."""
    weights = valid.to(grouped.dtype)
    count = weights.sum(-1, keepdim=True)
    mean = (grouped * weights).sum(-1, keepdim=True) / count.clamp_min(1)
    variance = ((grouped - mean).pow(2) * weights).sum(-1, keepdim=True) / (count - 1).clamp_min(1)
    several = count > 1
    mean = torch.where(several, mean, 0.0)
    std = torch.where(several, variance.sqrt(), 1.0).expand_as(grouped)
    return ((grouped - mean) * weights).reshape(-1), std.reshape(-1)


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """``[N / G]`` bool: groups whose rewards are all equal (they carry no GRPO signal)."""
    grouped = rewards.reshape(-1, group_size)
    return (grouped == grouped[:, :1]).all(-1)


#: bounds of the k3 estimator's log-ratio and of its value (verl's ``low_var_kl``)
KL_LOG_RATIO_LIMIT, KL_LIMIT = 20.0, 10.0


def k3_kl(log_likelihood: Tensor, reference_log_likelihood: Tensor) -> Tensor:
    """Per-step k3 estimator ``exp(ℓ_ref − ℓ) − (ℓ_ref − ℓ) − 1`` of KL(π‖π_ref) (Schulman, 2020).

    The log-ratio is clamped to ±20 and the estimate to at most 10, as verl's ``low_var_kl``
    does: density likelihoods (Dirichlet, Gaussian, Gumbel) give per-step log-densities far from
    0, and a drift of tens of nats would otherwise make ``exp`` overflow the loss. A clamped step
    adds no gradient.
    """
    delta = (reference_log_likelihood - log_likelihood).clamp(-KL_LOG_RATIO_LIMIT, KL_LOG_RATIO_LIMIT)
    return (torch.exp(delta) - delta - 1).clamp_max(KL_LIMIT)


def token_mean(values: Tensor, mask: Tensor, total_tokens: Tensor | int | None = None) -> Tensor:
    """Sum of ``values`` over ``mask`` divided by ``total_tokens`` (default: the mask's count).

    Passing the whole batch's token count lets micro-batches add up to the batch's token mean.
    """
    denominator = mask.sum() if total_tokens is None else total_tokens
    return (values * mask).sum() / torch.as_tensor(denominator, device=values.device).clamp_min(1)


def aggregate_loss(
    per_step: Tensor, mask: Tensor, loss_type: LossType, batch_tokens: Tensor, batch_sequences: int, max_new_tokens: int
) -> Tensor:
    """One micro-batch's share of the batch loss; the shares of all micro-batches add up to it.

    Args:
        per_step: ``[n, T]`` per-step loss of the micro-batch; ``mask`` which steps count.
        loss_type: TRL's aggregations. ``grpo`` and ``sapo``: mean over each sequence's steps,
            then over sequences (DeepSeekMath); ``bnpo`` and :data:`GLOBAL_TOKEN_MEAN` (``dapo``,
            ``cispo``, ``vespo``): mean over all steps of the batch (DAPO, arXiv 2503.14476; the
            latter count the steps of every process, see ``batch_tokens``); ``dr_grpo``: sum divided by sequences ×
            ``max_new_tokens`` (Dr. GRPO, arXiv 2503.20783); ``luspo``: each sequence's sum, averaged
            over sequences (LUSPO, arXiv 2602.05261: GSPO's sequence loss scaled by its length).
        batch_tokens: steps of the whole batch that count (for ``dapo``, all processes' count
            divided by the number of processes, as gradients are averaged across them).
        batch_sequences: sequences of the whole batch on this process.
    """
    masked = per_step * mask
    if loss_type in ("grpo", "sapo"):
        return (masked.sum(-1) / mask.sum(-1).clamp_min(1)).sum() / batch_sequences
    if loss_type == "bnpo" or loss_type in GLOBAL_TOKEN_MEAN:
        return masked.sum() / torch.as_tensor(batch_tokens, device=per_step.device).clamp_min(1)
    if loss_type == "dr_grpo":
        return masked.sum() / (batch_sequences * max_new_tokens)
    if loss_type == "luspo":
        return masked.sum() / batch_sequences
    raise ValueError(f"loss_type={loss_type!r}: choose grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo or vespo.")


def linear_quantile(values: Tensor, q: float) -> Tensor:
    """The ``q`` quantile of 1-d ``values`` with linear interpolation, as ``torch.quantile``
    computes it, but by sorting: ``torch.quantile`` refuses more than 2**24 values, which the
    entropies of every rank's steps can exceed."""
    ordered = values.sort().values
    position = q * (ordered.numel() - 1)
    low = int(position)
    high = min(low + 1, ordered.numel() - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def high_entropy_mask(
    entropy: Tensor, mask: Tensor, top_entropy_quantile: float, batch_entropy: Tensor | None = None
) -> Tensor:
    """Steps among the ``top_entropy_quantile`` fraction of highest entropy (Wang et al., "Beyond
    the 80/20 rule", arXiv 2506.01939; TRL's ``top_entropy_quantile``); 1.0 keeps every step.

    Args:
        batch_entropy: the entropies of the counted steps of the whole batch, over which the
            threshold is taken: every process's, as TRL gathers them; default ``entropy[mask]``.
    """
    if top_entropy_quantile >= 1.0 or not mask.any():
        return mask
    values = entropy[mask] if batch_entropy is None else batch_entropy
    threshold = linear_quantile(values.float(), 1.0 - top_entropy_quantile)
    return mask & (entropy >= threshold)


@torch.no_grad()
def sync_reference(reference: nn.Module, policy: nn.Module, alpha: float) -> None:
    """``θ_ref ← (1 − α) θ_ref + α θ`` (TR-DPO, arXiv 2404.09656; TRL's ``sync_ref_model``)."""
    for target, source in zip(reference.parameters(), policy.parameters(), strict=True):
        target.mul_(1.0 - alpha).add_(source.detach().to(target.dtype), alpha=alpha)
