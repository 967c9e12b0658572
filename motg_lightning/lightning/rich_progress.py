"""The Rich version of :mod:`motg_lightning.lightning.progress`'s step-counting bar (Lightning's default bar
when ``rich`` is installed); imported only then."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich.progress import ProgressColumn, Task
from rich.text import Text

from .progress import STEP_UNIT, counts_steps


class RateColumn(ProgressColumn):
    """Items per second since a task started (from its ``initial`` field on, so steps done before
    a resume do not count), or seconds per item when slower; ``step`` for the training task."""

    def __init__(self, style: Any):
        super().__init__()
        self.style = style

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        elapsed = task.finished_time if task.finished else task.elapsed
        done = task.completed - task.fields.get("initial", 0)
        if not done or not elapsed:
            return Text(f"--{unit}/s", style=self.style)
        rate = done / elapsed
        return Text(f"{rate:.2f}{unit}/s" if rate >= 1 else f"{1 / rate:.2f}s/{unit}", style=self.style)


class StepRichProgressBar(RichProgressBar):
    """Lightning's Rich bar whose training bar counts optimizer steps of ``trainer.max_steps``."""

    def configure_columns(self, trainer: L.Trainer) -> list:
        columns = super().configure_columns(trainer)
        return [*columns[:-1], RateColumn(self.theme.processing_speed)]  # in place of Lightning's speed

    def _get_train_description(self, current_epoch: int) -> str:
        if not counts_steps(self.trainer):
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"  # no epoch bound

    def _add_step_task(self, trainer: L.Trainer) -> None:
        self.train_progress_bar_id = self._add_task(trainer.max_steps, self._get_train_description(trainer.current_epoch))
        step = trainer.global_step
        self.progress.update(self.train_progress_bar_id, completed=step, initial=step, unit=STEP_UNIT)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if counts_steps(trainer) and not self.is_disabled and self.progress is not None:
            self._add_step_task(trainer)  # here, as a run resumed mid-epoch skips on_train_epoch_start
            self.refresh()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not counts_steps(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # one task for all epochs of the run
            self._add_step_task(trainer)
        else:
            description = self._get_train_description(trainer.current_epoch)
            styled = f"[{self.theme.description}]{description}" if self.theme.description else description
            self.progress.update(self.train_progress_bar_id, description=styled)
        self.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not counts_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, *args)
        if not self.is_disabled and self.progress is not None and self.train_progress_bar_id is None:
            self._add_step_task(trainer)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
