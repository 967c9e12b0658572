"""Progress bars that count optimizer steps of ``trainer.max_steps``.

Training is bounded by ``trainer.max_steps`` (optimizer steps; a batch makes ``num_iterations``
of them), but Lightning's bars count the batches of the current epoch, so they show a meaningless
bound (``Epoch 0/-2``), a count past the total after a resume, and a rate that stays at zero while
steps are slow. These bars count ``trainer.global_step`` out of ``max_steps`` from the step a run
resumed at (2/4 → 4/4), with the rate since training started (``step/s``, or ``s/step`` when
slower). Validation and test bars are Lightning's; with ``max_steps=-1`` (training bounded by
epochs) the training bar is Lightning's too.

:func:`step_progress_bar` picks the replacement of the trainer's default bar, TQDM's here and
Rich's in :mod:`motg_lightning.lightning.rich_progress`; the module returns it from
``configure_callbacks``, so a plain ``L.Trainer`` gets it, and ``enable_progress_bar=false`` or a
custom bar is left as it is.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

STEP_UNIT = "step"


def counts_steps(trainer: L.Trainer) -> bool:
    """Whether training is bounded by optimizer steps (``trainer.max_steps`` set)."""
    return trainer.max_steps is not None and trainer.max_steps > 0


def step_progress_bar(existing: ProgressBar | None) -> ProgressBar | None:
    """The step-counting bar that replaces ``existing`` when it is one of Lightning's own
    (keeping its settings); None when there is no bar or it is a custom one, which is kept."""
    if type(existing) is TQDMProgressBar:
        return StepTQDMProgressBar(existing.refresh_rate, existing.process_position, existing._leave)
    if type(existing) is RichProgressBar:
        from .rich_progress import (
            StepRichProgressBar,  # rich is installed: the trainer made this bar
        )

        return StepRichProgressBar(existing.refresh_rate, existing._leave, existing.theme, existing._console_kwargs)
    return None


class StepTQDMProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar whose training bar counts optimizer steps of ``trainer.max_steps``."""

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        if counts_steps(self.trainer):  # seconds per step when a step takes longer than a second
            bar.bar_format = self.BAR_FORMAT.replace("{rate_noinv_fmt}", "{rate_fmt}")
            bar.unit = STEP_UNIT
        return bar

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if counts_steps(trainer):  # here, as a run resumed mid-epoch skips on_train_epoch_start
            bar = self.train_progress_bar  # one bar for all epochs of the run
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step
            bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not counts_steps(trainer):
            return super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not counts_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, *args)
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total) and not bar.disable:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not counts_steps(trainer):
            return super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:  # the bar stays open across epochs
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
