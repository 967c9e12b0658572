"""DAPO's dynamic sampling (Yu et al., arXiv 2503.14476): a batch of groups that all carry signal.

Groups whose rewards are all equal give zero advantages and no gradient. Dynamic sampling drops
them and rolls out further prompts until the batch holds as many groups with reward variance as
it had prompts, within a bound on extra rollouts.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .grpo import zero_variance_groups
from .rewards import RewardOutput
from .rollout import Rollout, concatenate

Scored = tuple[Rollout, list[str], list[dict], RewardOutput, float]


def select_rewards(rewards: RewardOutput, rows: Tensor) -> RewardOutput:
    """Rewards of some rows (the scorer-error count stays the batch's)."""
    terms = {name: value[rows] for name, value in rewards.terms.items()}
    return RewardOutput(rewards.total[rows], terms, rewards.correct[rows], rewards.scorer_errors)


def concatenate_rewards(parts: list[RewardOutput]) -> RewardOutput:
    return RewardOutput(
        total=torch.cat([part.total for part in parts]),
        terms={name: torch.cat([part.terms[name] for part in parts]) for name in parts[0].terms},
        correct=torch.cat([part.correct for part in parts]),
        scorer_errors=sum(part.scorer_errors for part in parts),
    )


def dynamic_sample(
    batch: dict[str, Any],
    roll_out: Callable[[dict[str, Any]], Scored],
    next_batch: Callable[[], dict[str, Any]],
    group_size: int,
    max_rounds: int,
    agree: Callable[[bool], bool] = bool,
) -> tuple[Rollout, list[str], list[dict], RewardOutput, float, int]:
    """Groups with reward variance from ``batch`` and, while short, from ``next_batch()``.

    Args:
        roll_out: rolls out and scores a batch: rollout, completions, entries, rewards, seconds.
        max_rounds: rollouts at most (the first included); if none of them varied, the first
            batch is returned as it is (its advantages are zero, the step still runs).
        agree: turns this process's "I need another round" into the decision of all processes
            (true while any needs one), so that every rank rolls out the same number of times.

    Returns:
        rollout, completions, entries, rewards, seconds spent rolling out, rounds used.
    """
    wanted = batch["prompt_ids"].shape[0]
    kept: list[tuple[Rollout, list[str], list[dict], RewardOutput]] = []
    found, seconds, rounds, first = 0, 0.0, 0, None
    while agree(found < wanted and rounds < max_rounds):
        rollout, completions, entries, rewards, spent = roll_out(batch if rounds == 0 else next_batch())
        first = first or (rollout, completions, entries, rewards)
        seconds, rounds = seconds + spent, rounds + 1
        varied = (~zero_variance_groups(rewards.total, group_size)).nonzero().flatten().tolist()[: wanted - found]
        rows = [g * group_size + i for g in varied for i in range(group_size)]
        if rows:
            index = torch.tensor(rows)
            kept.append((rollout.select(index.to(rollout.tokens.device)), [completions[r] for r in rows],
                         [entries[r] for r in rows], select_rewards(rewards, index)))
            found += len(varied)
    if not kept:
        return (*first, seconds, rounds)
    rollouts, completions, entries, rewards = zip(*kept)
    return (concatenate(list(rollouts)), [c for part in completions for c in part], [e for part in entries for e in part],
            concatenate_rewards(list(rewards)), seconds, rounds)
