"""A random stream of the training step's own, saved in checkpoints so a resumed run goes on exactly.

The rules sample with torch's global generator (``torch.rand``, ``torch.multinomial``, Dirichlet
sampling), which validation also draws from. Checkpoints are written before the step's validation
runs, and a resumed run skips that validation; had training drawn from the global generator, the
two runs would roll out different completions afterwards. :class:`TrainingRandomState` keeps the
training step's state apart: entered around the step, it swaps its state into torch's global
generators (CPU, and the device's CUDA generator), and on exit saves it back while
``torch.random.fork_rng`` restores theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


class TrainingRandomState:
    """The CPU and CUDA generator states of training's random draws, apart from everyone else's.

    Args:
        seed: seeds the CPU state now and a CUDA device's state when first entered on one.
    """

    def __init__(self, seed: int = 0):
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self._seed = seed
        self._cpu: Tensor = torch.Generator().manual_seed(seed).get_state()
        self._cuda: Tensor | None = None

    @contextmanager
    def active(self, device: torch.device) -> Iterator[None]:
        """Draw from this state inside the block (on ``device``'s CUDA generator too, if CUDA);
        ``torch.random.fork_rng`` puts the outer state back afterwards."""
        cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
            torch.set_rng_state(self._cpu)
            if cuda:
                if self._cuda is None:
                    self._cuda = torch.Generator(device=device).manual_seed(self._seed).get_state()
                torch.cuda.set_rng_state(self._cuda, device)
            try:
                yield
            finally:
                self._cpu = torch.get_rng_state()
                if cuda:
                    self._cuda = torch.cuda.get_rng_state(device)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self._seed, "cpu": self._cpu.clone(), "cuda": None if self._cuda is None else self._cuda.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seed = int(state["seed"])
        self._cpu = state["cpu"].cpu().clone()
        self._cuda = None if state.get("cuda") is None else state["cuda"].cpu().clone()
