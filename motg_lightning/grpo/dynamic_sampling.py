"""DAPO's dynamic sampling (Yu et al., arXiv 2503.14476): a batch of groups that all carry signal.

Groups whose rewards are all equal give zero advantages and no gradient. Dynamic sampling drops
them and rolls out further prompts until the batch holds as many groups with reward variance as
it had prompts, within a bound on extra rollouts. The further prompts come from
:class:`RefillPrompts`, endless passes over the training data in an order of their own, whose
position is saved in checkpoints so a resumed run draws the same ones.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..lightning.resumable_loader import ResumableDataLoader
from .loss import zero_variance_groups
from .scored import ScoredRollout


def dynamic_sample(
    batch: dict[str, Any],
    roll_out: Callable[[dict[str, Any]], ScoredRollout],
    next_batch: Callable[[], dict[str, Any]],
    group_size: int,
    max_rounds: int,
    agree: Callable[[bool], bool] = bool,
) -> ScoredRollout:
    """Groups with reward variance from ``batch`` and, while short, from ``next_batch()``.

    Args:
        roll_out: rolls out and scores a batch.
        max_rounds: rollouts at most (the first included); if none of them varied, the first
            batch is returned as it is (its advantages are zero, the step still runs).
        agree: turns this process's "I need another round" into the decision of all processes
            (true while any needs one), so that every rank rolls out the same number of times.

    Returns:
        the kept groups, with the seconds spent rolling out, the rounds used, and the outcomes of
        every completion rolled out (``rolled_out``: the training accuracy counts dropped groups too).
    """
    wanted = batch["prompt_ids"].shape[0]
    kept: list[ScoredRollout] = []
    rolled: list[ScoredRollout] = []
    found, seconds, rounds, first = 0, 0.0, 0, None
    while agree(found < wanted and rounds < max_rounds):
        scored = roll_out(batch if rounds == 0 else next_batch())
        first = first or scored
        rolled.append(scored)
        seconds, rounds = seconds + scored.seconds, rounds + 1
        varied = (~zero_variance_groups(scored.rewards.total, group_size)).nonzero().flatten().tolist()[: wanted - found]
        if varied:
            kept.append(scored.select([g * group_size + i for g in varied for i in range(group_size)]))
            found += len(varied)
    outcomes = ([task for part in rolled for task in part.tasks], torch.cat([part.rewards.correct for part in rolled]))
    chosen = replace(first, seconds=seconds, rounds=rounds) if not kept else ScoredRollout.concatenate(kept, seconds, rounds)
    return replace(chosen, rolled_out=outcomes)


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

    @classmethod
    def for_trainer(cls, trainer: Any, state: dict[str, Any] | None = None) -> RefillPrompts:
        """Further prompts from ``trainer``'s datamodule (this process's share when distributed),
        from the position ``state`` saved, if given."""
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            raise ValueError("model.grpo.dynamic_sampling=true draws extra prompts from a datamodule; pass one to fit().")
        distributed = trainer.strategy.distributed_sampler_kwargs if trainer.world_size > 1 else None
        refill = cls(datamodule.train_dataloader(), distributed)
        if state is not None:
            refill.load_state_dict(state)
        return refill

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
        raise ValueError("model.grpo.dynamic_sampling=true: the training data is empty.")

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self._started, self._batches = state["passes"], False, None
        self.loader.load_state_dict(state["loader"])
