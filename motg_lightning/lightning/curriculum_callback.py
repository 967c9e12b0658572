"""``CurriculumCallback``: feeds each training step's outcomes to the data module's curriculum
(``data.curriculum``, :mod:`motg_lightning.curriculum`) and logs every followed task's level.

:class:`~motg_lightning.lightning.module.MoTGRPOModule` adds it by itself when the data module has
a curriculum. Every process gathers every process's outcomes, so all ranks move the same levels
at the same step and regenerate the same training items (each rank's sampler indexes the same list).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from ..collectives import gather_objects


class CurriculumCallback(L.Callback):
    """After each training step: record every completion's task and correctness (the
    ``"outcomes"`` of the module's step outputs, dynamic sampling's dropped groups included), move the levels that pass a
    threshold, regenerate those tasks' training items, and log ``curriculum/<task>_level`` and
    ``curriculum/<task>_accuracy`` (the rolling accuracy, while the window is not empty)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        datamodule = trainer.datamodule
        curriculum = getattr(datamodule, "curriculum", None)
        if curriculum is None or not isinstance(outputs, dict) or "outcomes" not in outputs:
            return
        tasks, correct = outputs["outcomes"]
        outcomes = gather_objects((list(tasks), correct.tolist()))
        changed = curriculum.record([task for tasks, _ in outcomes for task in tasks],
                                    [ok for _, correct in outcomes for ok in correct])
        if changed and datamodule.apply_levels() and hasattr(pl_module, "check_lengths"):
            pl_module.check_lengths(datamodule.longest_prompt)  # a harder level can mean longer prompts
        values = {f"curriculum/{task}_level": float(level) for task, level in curriculum.levels().items()}
        for task in curriculum.tasks:
            accuracy = curriculum.accuracy(task)
            if accuracy is not None:
                values[f"curriculum/{task}_accuracy"] = accuracy
        # the same values on every rank: no reduction needed, each rank logs them
        pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=1)
