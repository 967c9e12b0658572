"""``PredictionsJsonl``: the rows ``predict`` returns, from every process, in one JSONL file.

``python main.py predict`` adds one writing ``predictions.jsonl`` in ``trainer.default_root_dir``;
one configured under ``trainer.callbacks`` (``init_args: {output: ...}``) replaces it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from ..collectives import gather_objects
from .completions_log import write_jsonl

FILE_NAME = "predictions.jsonl"


class PredictionsJsonl(BasePredictionWriter):
    """Writes the rows of :meth:`~motg_lightning.lightning.predict_steps.PredictSteps.predict_step`,
    one JSON object per line, when prediction ends: rows of every process are gathered, each
    question × sample is kept once (a distributed sampler repeats the last questions so that
    every rank steps together) and sorted by question and sample, and process 0 writes the file.

    Args:
        output: the JSONL file to write (replaced if it exists); None: `predictions.jsonl` in
            `trainer.default_root_dir`.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.rows: list[dict[str, Any]] = []
        self.path: Path | None = None  # the file written, once written

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        self.rows.extend(prediction)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        gathered = [row for rows in gather_objects(self.rows) for row in rows]
        self.rows = []
        if not trainer.is_global_zero:
            return
        ordered = gathered  # rows without an index (a data loader of one's own): all, as they came
        if all(row["index"] is not None for row in gathered):
            unique = {(row["index"], row["sample"]): row for row in reversed(gathered)}  # the first of each pair
            ordered = sorted(unique.values(), key=lambda row: (row["index"], row["sample"]))
        self.path = Path(self.output) if self.output is not None else Path(trainer.default_root_dir) / FILE_NAME
        write_jsonl(self.path, ordered)
