"""A DataLoader that resumes in the middle of an epoch, in the same order.

Lightning saves a training DataLoader's ``state_dict()`` in every checkpoint and hands it back
through ``load_state_dict()`` before the resumed run iterates, when the loader has both methods.
This one records the state of its shuffling generator at the start of the current epoch and how
many batches it has yielded since; restored, its next pass draws the same permutation and skips
the batches already trained on. (With a ``DistributedSampler`` the order depends only on the
sampler's seed and epoch; the skip still applies.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """:class:`~torch.utils.data.DataLoader` with ``state_dict``/``load_state_dict``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._epoch_start: torch.Tensor | None = None
        self._yielded = 0
        self._resume: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        skip = 0
        if self._resume is not None:
            if self._resume["generator"] is not None and self.generator is not None:
                self.generator.set_state(self._resume["generator"])
            skip, self._resume = self._resume["yielded"], None
        self._epoch_start = self.generator.get_state() if self.generator is not None else None
        self._yielded = skip
        batches = super().__iter__()
        for _ in range(skip):
            next(batches, None)
        for batch in batches:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._epoch_start, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)
