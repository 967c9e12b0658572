"""The optimizer step of a manually optimised update: a guard against non-finite gradients,
clipping, the step itself, the scheduler, and what must follow each step (the reference sync)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def gradient_norm(parameters: Iterable[torch.nn.Parameter], device: torch.device) -> Tensor:
    """Total L2 norm of the gradients before clipping (stays on the device; whole under FSDP2)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros((), device=device)
    norm = torch.nn.utils.get_total_norm(grads).float()
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # sharded (FSDP2) gradients


class GuardedOptimizerStep:
    """Steps the optimizer after the micro-batches' backward passes, unless the gradient is not
    finite: then the gradient is dropped and the update skipped; after ``max_nonfinite_updates``
    such updates in a row :attr:`should_stop` turns true (the run stops, keeping its checkpoints).

    Args:
        clip: clips the gradients to a norm (Lightning's ``clip_gradients``, which knows how
            under each strategy); None when ``max_grad_norm`` is None.
        after_step: called after each applied step (the reference model's sync).
    """

    def __init__(
        self, max_grad_norm: float | None, max_nonfinite_updates: int,
        clip: Callable[[Any, float], None] | None = None, after_step: Callable[[], None] | None = None,
    ):
        self.max_grad_norm, self.max_nonfinite_updates = max_grad_norm, max_nonfinite_updates
        self.clip, self.after_step = clip, after_step
        self.nonfinite_in_row = 0

    @property
    def should_stop(self) -> bool:
        return self.nonfinite_in_row >= self.max_nonfinite_updates

    def __call__(self, optimizer: Any, scheduler: Any, norm: Tensor) -> bool:
        """Apply the update whose gradient has norm ``norm``; return whether it was applied."""
        if not self._finite(norm):
            optimizer.zero_grad(set_to_none=True)
            return False
        if self.max_grad_norm is not None and self.clip is not None:
            self.clip(optimizer, self.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        if self.after_step is not None:
            self.after_step()
        return True

    def _finite(self, norm: Tensor) -> bool:
        """False for a non-finite norm (the same on every rank: gradients are reduced)."""
        if torch.isfinite(norm):
            self.nonfinite_in_row = 0
            return True
        self.nonfinite_in_row += 1
        log.warning("Non-finite gradient (norm %s): update skipped (%d in a row).", float(norm), self.nonfinite_in_row)
        if self.should_stop:
            log.error(
                "Stopping: %d updates in a row had non-finite gradients (model.grpo.max_nonfinite_updates=%d). "
                "The weights are those of the last finite update and checkpoints are kept. Lower the learning "
                "rate, set model.grpo.max_grad_norm, or use bf16 instead of fp16.",
                self.nonfinite_in_row, self.max_nonfinite_updates,
            )
        return False
