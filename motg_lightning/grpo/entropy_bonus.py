"""The entropy bonus and its adaptive coefficient (TRL's ``entropy_coef``, ``use_adaptive_entropy``).

The loss is lowered by ``c · H``, ``H`` the mean entropy of the policy's tempered next-token
distribution over the thinking steps the policy term trains on (soft-token training is prone to
entropy collapse; :func:`motg_lightning.grpo.objective.micro_batch_loss` applies it). With a fixed
``c`` that is all. The adaptive form (Skywork-OR1, He et al., arXiv 2505.22312) applies ``c`` only
while the entropy measured at the previous optimizer step is at most ``entropy_target`` (none
before the first measurement), and after each optimizer step moves ``c`` by ``entropy_coef_delta``
up when that step's entropy was at most the target, else down, within
``[entropy_coef_min, entropy_coef_max]``. Its state is saved in checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..collectives import mean_over_ranks


class EntropyBonus:
    """The coefficient of the entropy bonus, fixed or adaptive.

    Args:
        coef: the coefficient (the adaptive form's initial one); 0 without adaptation: no bonus.
        adaptive: TRL's ``use_adaptive_entropy``.
        target, delta, coef_min, coef_max: TRL's ``entropy_target``, ``entropy_coef_delta``,
            ``entropy_coef_min``, ``entropy_coef_max``.
    """

    def __init__(self, coef: float = 0.0, adaptive: bool = False, target: float = 0.2, delta: float = 0.005,
                 coef_min: float = 0.0, coef_max: float = 1.0):
        self.coef, self.adaptive = coef, adaptive
        self.target, self.delta, self.coef_min, self.coef_max = target, delta, coef_min, coef_max
        self.last_entropy = math.inf  # no bonus in adaptive mode until a measurement arrives

    @property
    def enabled(self) -> bool:
        """Whether the loss needs the policy's entropy at all."""
        return self.coef != 0 or self.adaptive

    @property
    def applied(self) -> float:
        """The coefficient the next optimizer step's micro-batches use."""
        if self.adaptive and self.last_entropy > self.target:
            return 0.0
        return self.coef

    def observe(self, entropy: Tensor | None) -> None:
        """After an optimizer step: its mean entropy (this process's; averaged over processes
        here) moves the adaptive coefficient. Nothing happens in the fixed form."""
        if not self.adaptive or entropy is None:
            return
        world = float(mean_over_ranks(torch.as_tensor(entropy, dtype=torch.float32)))
        step = self.delta if world <= self.target else -self.delta
        self.coef = min(max(self.coef + step, self.coef_min), self.coef_max)
        self.last_entropy = world

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef, "last_entropy": self.last_entropy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef, self.last_entropy = float(state["coef"]), float(state["last_entropy"])
