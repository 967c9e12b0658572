"""A JSONL file of question/answer pairs as the Reasoning-Gym dataset ``question_file``.

Train on your own questions by naming the file among the data module's tasks::

    data:
      tasks:
        - name: question_file
          config: {path: my_questions.jsonl, scorer: number}

Each line is a JSON object with a ``question`` string and an ``answer`` (a string, or a number
kept as its text); its other fields, and those of an optional ``metadata`` object, go into the
entry's ``metadata`` beside ``source_dataset`` (``question_file``), ``source_index`` (the row) and
``scorer``. Item ``i`` is row ``order[i % rows]`` of a permutation drawn from the seed, so the
held-out splits the data module draws first depend on ``data.seed``, and training cycles over
the remaining rows. A relative ``path`` starts at the working directory, as a command-line path does.

The scorer travels in each entry's metadata because Reasoning-Gym scores an entry with a dataset
built from the *default* config (``get_score_answer_fn``), which names no file and no scorer.
Not done here: several question files in one mixture (a task name appears once; merge the files).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from reasoning_gym.dataset import ProceduralDataset
from reasoning_gym.factory import DATASETS, register_dataset

from .scorers import EXACT, load_scorer

NAME = "question_file"


def read_questions(path: str, field: str = "data.predict_file", require_answer: bool = False) -> list[dict[str, Any]]:
    """The entries of a JSONL file of questions: one JSON object per line with a non-empty
    ``question`` string, optionally a ``metadata`` object and, to be scored, an ``answer`` (with
    ``require_answer`` every line needs one, a non-empty string or a number); blank lines are
    skipped. Raises a ``ValueError`` naming ``field`` and the line."""
    where = f"{field}={path}"
    shape = '{"question": ..., "answer": ...}' if require_answer else '{"question": ...}'
    if not Path(path).is_file():
        raise ValueError(f"{where}: no such file (a relative path starts at the working directory, {Path.cwd()}); "
                         f"give a JSONL file of questions, one {shape} per line.")
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}, line {number}: not JSON ({error.msg}).") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) or not entry["question"].strip():
            raise ValueError(f"{where}, line {number}: each line must be a JSON object with a non-empty \"question\" string.")
        if not isinstance(entry.get("metadata", {}), dict):
            raise ValueError(f"{where}, line {number}: \"metadata\" must be a JSON object.")  # noqa: TRY004 (a setting's error)
        answer = entry.get("answer")
        if require_answer and (isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip()):
            raise ValueError(f"{where}, line {number}: each line needs an \"answer\", a non-empty string or a number.")
        entries.append(entry)
    if not entries:
        raise ValueError(f"{where}: the file holds no questions.")
    return entries


def question_rows(path: str) -> tuple[dict[str, Any], ...]:
    """The rows of the question file at ``path`` (each line checked as :func:`read_questions`
    does, an answer required), read once per version of the file."""
    file = Path(path)
    return _read_rows(path, str(file.absolute()), file.stat().st_mtime_ns if file.is_file() else None)


@functools.lru_cache(maxsize=8)
def _read_rows(path: str, absolute: str, version: int | None) -> tuple[dict[str, Any], ...]:
    """The rows, cached by absolute path and modification time: the data module and Reasoning-Gym
    check a config three times before the dataset reads its rows."""
    return tuple(read_questions(path, field="path", require_answer=True))


@dataclass
class QuestionFileConfig:
    """Options of the ``question_file`` task.

    Attributes:
        path: the JSONL file, one `{"question": ..., "answer": ...}` object per line; a relative
            path starts at the working directory.
        scorer: how an answer is scored: `exact` (Reasoning-Gym's default scorer after trimming
            whitespace and case: 1 for the answer, partial credit `len(answer) / len(reply)` for
            a reply that contains it), `number` (Reasoning-Gym's decimal comparison, `+1,000.0`
            is `1000`), or an import path `package.module:function` (or
            `package.module.function`) of a function `(answer: str | None, entry: dict) -> float`.
        seed: orders the rows (the data module sets it from `data.seed`).
        size: items of the dataset; rows repeat when it exceeds their number.
    """

    path: str | None = None
    scorer: str = EXACT
    seed: int | None = None
    size: int = 500

    def validate(self) -> None:
        """Read and check the file and import the scorer, raising a ``ValueError`` that names the
        option. Without ``path`` this is the config Reasoning-Gym scores entries with."""
        if self.size < 1:
            raise ValueError(f"size={self.size}: must be at least 1.")
        if self.scorer != EXACT:
            load_scorer(self.scorer)
        if self.path is not None:
            question_rows(self.path)


class QuestionFileDataset(ProceduralDataset):
    """The rows of :attr:`QuestionFileConfig.path` as Reasoning-Gym entries, scored by the
    scorer each entry's metadata names."""

    def __init__(self, config: QuestionFileConfig):
        super().__init__(config=config, seed=config.seed, size=config.size)
        self.rows = question_rows(config.path) if config.path is not None else ()
        self.order = Random(self.seed).sample(range(len(self.rows)), len(self.rows))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not self.rows:
            raise ValueError(f"data.tasks[{NAME}].config.path: not set; name the JSONL file of questions, "
                             "e.g. config: {path: questions.jsonl}.")
        index = self.order[idx % len(self.rows)]
        row = self.rows[index]
        extra = {key: value for key, value in row.items() if key not in ("question", "answer", "metadata")}
        metadata = copy.deepcopy({**row.get("metadata", {}), **extra})
        metadata.update(source_dataset=NAME, source_index=index, scorer=self.config.scorer)
        return {"question": row["question"], "answer": str(row["answer"]), "metadata": metadata}

    def score_answer(self, answer: str | None, entry: dict[str, Any]) -> float:
        """The score of ``answer`` by the scorer ``entry["metadata"]["scorer"]`` names; ``exact``
        is Reasoning-Gym's default scorer on text with its whitespace and case normalised."""
        scorer = entry["metadata"].get("scorer", EXACT)
        if scorer != EXACT:
            return load_scorer(scorer)(answer, entry)
        return super().score_answer(_normalised(answer), {**entry, "answer": _normalised(str(entry["answer"]))})


def _normalised(text: str | None) -> str | None:
    """``text`` with runs of whitespace made one space, trimmed, and case-folded."""
    return " ".join(text.split()).casefold() if text is not None else None


if NAME not in DATASETS:  # importing this module again (a reload) must not register twice
    register_dataset(NAME, QuestionFileDataset, QuestionFileConfig)
