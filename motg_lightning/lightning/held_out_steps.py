"""``validate`` and ``test`` of :class:`~motg_lightning.lightning.module.MoTGRPOModule`: roll out
each held-out question ``evaluation.samples`` times and report accuracy, mean@k, pass@k, format
rate and completion length per task and overall."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ..evaluation.held_out import evaluation_rule
from ..rewards import format_reward


class HeldOutSteps(L.LightningModule):
    """The module's validation and test hooks. Expects ``roll_out``, ``mixture``, ``options`` and
    ``held_out`` (:class:`~motg_lightning.evaluation.held_out.EvaluationMetrics`) of the module."""

    def _evaluation_step(self, batch: dict[str, Any]) -> None:
        samples = self.options.evaluation.samples
        scored = self.roll_out(batch, samples, rule=evaluation_rule(self.options.evaluation.decoding, self.mixture))
        formatted = torch.tensor([format_reward(text) > 0 for text in scored.completions])
        shape = (len(batch["tasks"]), samples)
        self.held_out.update(
            batch["tasks"], scored.rewards.correct.view(shape).to(self.device), formatted.view(shape).to(self.device),
            scored.rollout.completion_mask.sum(-1).view(shape),
        )

    def _log_evaluation(self, prefix: str) -> None:
        values = self.held_out.compute(prefix)
        if values:  # torchmetrics has synchronised the values; sync_dist only averages equal numbers
            self.log(f"{prefix}/accuracy", values.pop(f"{prefix}/accuracy"), prog_bar=True, sync_dist=True)
            self.log_dict(values, sync_dist=True)
        self.held_out.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")
