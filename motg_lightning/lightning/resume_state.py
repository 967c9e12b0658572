"""What a checkpoint holds besides the weights and the optimizer, so a resumed run goes on exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

#: the checkpoint key of :class:`ResumeState`
CHECKPOINT_KEY = "motg_lightning"


@dataclass
class ResumeState:
    """Saved under one checkpoint key (:data:`CHECKPOINT_KEY`).

    Attributes:
        training_rng: every rank's training random stream
            (:class:`~motg_lightning.lightning.random_state.TrainingRandomState`), so a resumed run
            draws what the uninterrupted one would have.
        refill_prompts: where dynamic sampling's further prompts have got to
            (:class:`~motg_lightning.grpo.dynamic_sampling.RefillPrompts`).
        reference: the reference model's weights, once ``sync_ref_model`` has moved them away from
            the initial model's.
        entropy_bonus: the adaptive entropy coefficient and the last measured entropy
            (:class:`~motg_lightning.grpo.entropy_bonus.EntropyBonus`).
    """

    training_rng: list[dict[str, Any]] | None = None
    refill_prompts: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    entropy_bonus: dict[str, Any] | None = None

    def save(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def load(cls, checkpoint: dict[str, Any]) -> ResumeState:
        """The state in ``checkpoint``, also from the keys of older checkpoints."""
        if CHECKPOINT_KEY in checkpoint:
            return cls(**checkpoint[CHECKPOINT_KEY])
        training_rng = checkpoint.get("training_rng")
        if training_rng is None and "rollout_rng" in checkpoint:
            # before training had a stream of its own, rank 0's global generators, which it drew from
            old = checkpoint["rollout_rng"]
            cuda = old["cuda"][0] if len(old["cuda"]) else None
            training_rng = [{"seed": torch.initial_seed(), "cpu": old["cpu"], "cuda": cuda}]
        return cls(training_rng, checkpoint.get("refill_prompts"), checkpoint.get("reference_state_dict"))

    def rank_rng(self, rank: int) -> dict[str, Any] | None:
        """Rank ``rank``'s saved training stream; None when none was saved for it."""
        return self.training_rng[rank] if self.training_rng is not None and rank < len(self.training_rng) else None
