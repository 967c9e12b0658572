"""Micro-batches of a rollout for the update, matched in number across processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MicroBatch:
    """Rows ``rows`` of the rollout; ``counted`` is False for a padding micro-batch, which runs
    the forward and backward (collectives under DDP and FSDP) but contributes nothing."""

    rows: slice
    counted: bool = True

    def loss_mask(self, loss_mask: Tensor) -> Tensor:
        """The rows of ``loss_mask``; all False for a padding micro-batch."""
        mask = loss_mask[self.rows]
        return mask if self.counted else torch.zeros_like(mask)


def micro_batches(rows: int, size: int, busiest: Callable[[int], int] = lambda count: count) -> list[MicroBatch]:
    """Consecutive slices of at most ``size`` of ``rows`` rollouts, then padding micro-batches
    (row 0, not counted) up to ``busiest(count)``, the count of the process with the most (the
    maximum over processes, :func:`motg_lightning.collectives.max_over_ranks`), so forwards and
    backwards match across processes even when their rollouts differ in size."""
    real = [MicroBatch(slice(start, min(start + size, rows))) for start in range(0, rows, size)]
    return real + [MicroBatch(slice(0, 1), counted=False)] * (busiest(len(real)) - len(real))
