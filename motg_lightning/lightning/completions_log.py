"""Sample completions as rows (step, prompt, completion, total reward, each reward term) and
``completions.jsonl``, the run folder's file of them, one JSON object per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

from ..grpo.scored import ScoredRollout

FILE_NAME = "completions.jsonl"


def completion_rows(step: int, scored: ScoredRollout) -> list[dict[str, Any]]:
    """One row per completion: ``step``, ``prompt`` (the entry's question), ``completion``,
    ``reward`` (the total) and one key per reward term, named by the term."""
    rewards = scored.rewards
    totals = rewards.total.detach().cpu().tolist()
    terms = {name: values.detach().cpu().tolist() for name, values in rewards.terms.items()}
    return [
        {"step": step, "prompt": entry["question"], "completion": completion, "reward": total,
         **{name: values[row] for name, values in terms.items()}}
        for row, (entry, completion, total) in enumerate(zip(scored.entries, scored.completions, totals))
    ]


def run_folder(trainer: L.Trainer) -> Path:
    """The first logger's ``log_dir`` (else its ``save_dir``), or ``trainer.default_root_dir``
    without a logger or when the logger has neither. Resolved locally: unlike
    ``trainer.log_dir`` it makes no collective call, so rank 0 alone may ask."""
    logger = trainer.logger
    folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
    return Path(folder or trainer.default_root_dir)


class CompletionsLog:
    """Appends rows to a JSONL file. Each :meth:`append` opens the file, writes and closes it,
    so what was written survives a crash, and a resumed run goes on in the same file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, trainer: L.Trainer) -> CompletionsLog:
        """The log of ``trainer``'s run folder (:func:`run_folder`)."""
        return cls(run_folder(trainer) / FILE_NAME)

    def append(self, rows: list[dict[str, Any]]) -> None:
        write_jsonl(self.path, rows, mode="a")


def write_jsonl(path: Path, rows: list[dict[str, Any]], mode: str = "w") -> None:
    """Write ``rows`` to ``path``, one JSON object per line (``mode`` ``a`` appends), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode, encoding="utf-8") as file:
        file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
