"""Logging of :class:`~motg_lightning.lightning.module.MoTGRPOModule`'s training step: its
statistics averaged over processes (reward, accuracy and rollout tokens/s on the progress bar),
sample completions every ``logging.log_completions_every_n_steps`` steps (``completions.jsonl``
in the run folder, TensorBoard's text tab, a W&B table), and the exploration measures every
``logging.exploration_every_n_steps`` steps."""

from __future__ import annotations

import lightning as L
from torch import Tensor

from ..collectives import gather_objects
from ..evaluation.exploration import exploration_metrics
from ..evaluation.training_metrics import completions_markdown, step_statistics
from ..grpo.scored import ScoredRollout
from ..rollout import Rollout, eval_mode
from .completions_log import CompletionsLog, completion_rows
from .distributed import unsharded_for_generation

EXPLORATION_BUCKETS = 8  # step-index buckets of the entropy profiles
PROGRESS_BAR = ("reward", "accuracy", "rollout_tokens_per_s")  # statistics shown on the progress bar


class StepLogging(L.LightningModule):
    """Expects the module's ``options``, ``policy``, ``mixture`` and optimizer."""

    def log_step(self, scored: ScoredRollout, update: dict[str, Tensor], batch_idx: int) -> None:
        """The step's statistics (averaged over processes), sample completions and exploration measures."""
        logging = self.options.logging
        lr = self.optimizers().param_groups[0]["lr"]
        stats = step_statistics(scored, update, self.options.grpo.num_generations, lr, self.device)
        rows = len(scored.entries)
        shown = {name: stats.pop(name) for name in PROGRESS_BAR}
        for group, prog_bar in ((shown, True), (stats, False)):
            self.log_dict({f"train/{name}": value for name, value in group.items()},
                          prog_bar=prog_bar, on_step=True, batch_size=rows, sync_dist=True)
        if _every(logging.log_completions_every_n_steps, batch_idx):
            self._log_completions(scored)
        if _every(logging.exploration_every_n_steps, batch_idx):
            self._log_exploration(scored.rollout)

    def _log_exploration(self, rollout: Rollout) -> None:
        """Entropies along the reasoning and hidden-state entropy per layer
        (:func:`motg_lightning.evaluation.exploration.exploration_metrics`). This process's
        values: the names present can differ between processes, so they are not averaged."""
        with unsharded_for_generation(self.policy), eval_mode(self.policy):
            values = exploration_metrics(self.policy, self.mixture, rollout, EXPLORATION_BUCKETS)
        self.log_dict(values, on_step=True)

    def _log_completions(self, scored: ScoredRollout) -> None:
        """Every process's completions, gathered to rank 0 (all ranks take part), which appends
        them to ``completions.jsonl`` and logs them to each logger that takes them: a table under
        W&B (any logger with ``log_table``: wandb is never imported here), a few in TensorBoard's
        text tab (any logger whose ``experiment`` has ``add_text``; rank 0's first rows)."""
        rows = [row for part in gather_objects(completion_rows(self.global_step, scored)) for row in part]
        if self.global_rank != 0:
            return
        CompletionsLog.of(self.trainer).append(rows)
        for logger in self.loggers:
            if callable(getattr(logger, "log_table", None)):
                columns = list(rows[0]) if rows else []
                logger.log_table(key="train/completions", columns=columns,
                                 data=[list(row.values()) for row in rows], step=self.global_step)
            elif hasattr(experiment := getattr(logger, "experiment", None), "add_text"):
                questions = [entry["question"] for entry in scored.entries]
                markdown = completions_markdown(questions, scored.completions, scored.rewards.total)
                experiment.add_text("train/completions", markdown, self.global_step)


def _every(interval: int, batch_idx: int) -> bool:
    """Whether a step ``batch_idx`` falls on an ``interval`` (0: never)."""
    return interval > 0 and batch_idx % interval == 0
