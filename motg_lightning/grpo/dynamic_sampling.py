"""DAPO's dynamic sampling (Yu et al., arXiv 2503.14476): a batch of groups that all carry signal.

Groups whose rewards are all equal give zero advantages and no gradient. Dynamic sampling drops
them and rolls out further prompts until the batch holds as many groups with reward variance as
it had prompts, within a bound on extra rollouts. The further prompts come from
:class:`RefillPrompts`, endless passes over the training data in an order of their own, whose
position is saved in checkpoints so a resumed run draws the same ones.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from .loss import zero_variance_groups
from ..lightning.resumable_loader import ResumableDataLoader
from ..rewards.scoring import RewardOutput
from ..rollout.record import Rollout, concatenate

Scored = tuple[Rollout, list[str], list[dict], RewardOutput, float]


def select_rewards(rewards: RewardOutput, rows: Tensor) -> RewardOutput:
    """Rewards of some rows (the scorer-error count stays the batch's)."""
    terms = {name: value[rows] for name, value in rewards.terms.items()}
    return RewardOutput(rewards.total[rows], terms, rewards.correct[rows], rewards.reward_errors)


def concatenate_rewards(parts: list[RewardOutput]) -> RewardOutput:
    return RewardOutput(
        total=torch.cat([part.total for part in parts]),
        terms={name: torch.cat([part.terms[name] for part in parts]) for name in parts[0].terms},
        correct=torch.cat([part.correct for part in parts]),
        reward_errors=sum(part.reward_errors for part in parts),
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


class RefillPrompts:
    """Batches of further training prompts for dynamic sampling, without end.

    Passes over ``loader``'s dataset (this process's share when ``distributed`` holds
    ``DistributedSampler`` arguments) in a shuffled order seeded apart from the training loader's,
    so refills are not the prompts the next steps will train on anyway. :meth:`state_dict` holds
    the pass and the position in it.
    """

    def __init__(self, loader: DataLoader, distributed: dict[str, Any] | None = None):
        seed = (loader.generator.initial_seed() if loader.generator is not None else 0) + 1
        options = dict(batch_size=loader.batch_size, collate_fn=loader.collate_fn)
        if distributed:
            sampler = DistributedSampler(loader.dataset, **distributed, shuffle=True, seed=seed)
            self.loader = ResumableDataLoader(loader.dataset, sampler=sampler, **options)
        else:
            self.loader = ResumableDataLoader(loader.dataset, shuffle=True, generator=torch.Generator().manual_seed(seed), **options)
        self.passes = 0  # the pass the loader's state refers to
        self._started = False
        self._batches: Iterator[Any] | None = None

    def next_batch(self) -> Any:
        for _ in range(2):
            if self._batches is None:
                self.passes += int(self._started)
                self._started = True
                if isinstance(self.loader.sampler, DistributedSampler):
                    self.loader.sampler.set_epoch(self.passes)
                self._batches = iter(self.loader)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None
        raise ValueError("model.dynamic_sampling=true: the training data is empty.")

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self._started, self._batches = state["passes"], False, None
        self.loader.load_state_dict(state["loader"])
