"""Logging of :class:`~motg_lightning.lightning.module.MoTGRPOModule`'s training step: its
statistics averaged over processes, sample completions in TensorBoard's text tab, and the
exploration measures every ``logging.exploration_every_n_steps`` steps."""

from __future__ import annotations

import lightning as L
from torch import Tensor

from ..evaluation.exploration import exploration_metrics
from ..evaluation.training_metrics import completions_markdown, step_statistics
from ..grpo.scored import ScoredRollout
from ..rollout import Rollout, eval_mode
from .distributed import unsharded_for_generation

EXPLORATION_BUCKETS = 8  # step-index buckets of the entropy profiles


class StepLogging(L.LightningModule):
    """Expects the module's ``options``, ``policy``, ``mixture`` and optimizer."""

    def log_step(self, scored: ScoredRollout, update: dict[str, Tensor], batch_idx: int) -> None:
        """The step's statistics (averaged over processes), sample completions and exploration measures."""
        logging = self.options.logging
        lr = self.optimizers().param_groups[0]["lr"]
        stats = step_statistics(scored, update, self.options.grpo.num_generations, lr, self.device)
        rows = len(scored.entries)
        self.log("train/reward", stats.pop("reward"), prog_bar=True, batch_size=rows, sync_dist=True)
        self.log_dict({f"train/{name}": value for name, value in stats.items()}, on_step=True, batch_size=rows, sync_dist=True)
        if _every(logging.log_completions_every_n_steps, batch_idx):
            self._log_completions([e["question"] for e in scored.entries], scored.completions, scored.rewards.total)
        if _every(logging.exploration_every_n_steps, batch_idx):
            self._log_exploration(scored.rollout)

    def _log_exploration(self, rollout: Rollout) -> None:
        """Entropies along the reasoning and hidden-state entropy per layer
        (:func:`motg_lightning.evaluation.exploration.exploration_metrics`). This process's
        values: the names present can differ between processes, so they are not averaged."""
        with unsharded_for_generation(self.policy), eval_mode(self.policy):
            values = exploration_metrics(self.policy, self.mixture, rollout, EXPLORATION_BUCKETS)
        self.log_dict(values, on_step=True)

    def _log_completions(self, questions: list[str], completions: list[str], rewards: Tensor) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            experiment.add_text("train/completions", completions_markdown(questions, completions, rewards), self.global_step)


def _every(interval: int, batch_idx: int) -> bool:
    """Whether a step ``batch_idx`` falls on an ``interval`` (0: never)."""
    return interval > 0 and batch_idx % interval == 0
