"""Per-step statistics of a rollout and its rewards, as logged to TensorBoard."""

from __future__ import annotations

import torch
from torch import Tensor

from ..grpo.loss import zero_variance_groups
from ..grpo.scored import ScoredRollout
from ..rewards.scoring import RewardOutput
from ..rollout.record import Rollout
from .exploration import token_exploration


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` holds (0 when it never does)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def rollout_metrics(rollout: Rollout, rewards: RewardOutput, group_size: int, seconds: float) -> dict[str, Tensor | float]:
    """Reward, accuracy, lengths and exploration statistics of one training rollout.

    ``entropy`` is the mean entropy of the tempered next-token distribution over the policy's own
    steps; ``mixture_weight_entropy`` the mean entropy of the mixture weights over thinking steps.
    """
    lengths = rollout.completion_mask.sum(-1).float()
    own_steps = rollout.loss_mask
    stats: dict[str, Tensor | float] = {
        "reward": rewards.total.mean(),
        "reward_std": rewards.total.std() if rewards.total.numel() > 1 else rewards.total.new_zeros(()),
        "accuracy": rewards.correct.float().mean(),
        "reward_errors": float(rewards.reward_errors),
        "zero_variance_groups": zero_variance_groups(rewards.total, group_size).float().mean(),
        "completion_length/mean": lengths.mean(),
        "completion_length/min": lengths.min(),
        "completion_length/max": lengths.max(),
        "thinking_length": rollout.thinking.sum(-1).float().mean(),
        "truncated_fraction": rollout.truncated.float().mean(),
        "forced_fraction": rollout.forced.any(-1).float().mean(),
        "entropy": masked_mean(rollout.entropy, own_steps),
        "mixture_weight_entropy": masked_mean(rollout.weight_entropy, rollout.thinking),
        "rollout_tokens_per_s": float(rollout.completion_mask.sum()) / max(seconds, 1e-9),
        "rollout_seconds": seconds,
    }
    for name, values in rewards.terms.items():
        stats[f"rewards/{name}/mean"] = values.mean()
        stats[f"rewards/{name}/std"] = values.std() if values.numel() > 1 else values.new_zeros(())
    return stats


def step_statistics(
    scored: ScoredRollout, update: dict[str, Tensor], group_size: int, lr: float, device: torch.device
) -> dict[str, Tensor]:
    """Every per-step figure of a training step (rollout, rewards, update, token-space
    exploration, learning rate, sampling rounds, peak GPU memory) as float32 tensors on ``device``,
    where collectives can average them (NCCL cannot average the CPU tensors made from rewards)."""
    rollout = scored.rollout
    stats = {**rollout_metrics(rollout, scored.rewards, group_size, scored.seconds), **update}
    stats.update(token_exploration(rollout.tokens, rollout.thinking & rollout.completion_mask, group_size))
    stats["lr"] = lr
    stats["sampling_rounds"] = float(scored.rounds)
    if device.type == "cuda":
        stats["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return {name: torch.as_tensor(value, dtype=torch.float32, device=device) for name, value in stats.items()}


def completions_markdown(questions: list[str], completions: list[str], rewards: Tensor, limit: int = 4) -> str:
    """A Markdown table of a few sample completions for TensorBoard's text tab."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    rows = ["| question | completion | reward |", "| --- | --- | --- |"]
    for question, completion, reward in list(zip(questions, completions, rewards.tolist()))[:limit]:
        rows.append(f"| {cell(question)} | {cell(completion)} | {reward:.3f} |")
    return "\n".join(rows)
