"""Training items that follow ``data.curriculum`` (:class:`~motg_lightning.curriculum.Curriculum`):
the part of :class:`~motg_lightning.lightning.data.ReasoningGymDataModule` that changes a task's
training items when its level changes, and saves the levels in checkpoints.

Validation and test items are drawn once, each followed task at its start level, and never change:
validation curves stay comparable over the whole run (at a harder level the same policy would
score lower, which would read as a regression). Training items keep their slots of the training
list; when a task's level changes its slots get new items of that task at the new level, none
with a held-out question, and the running DataLoader, which indexes that very list, serves them
from the next batch it fetches, the next step's. Items at a level depend only on
the seed, the task and the level (the start level's are the first ones), so a resumed run
regenerates the very items it left. What this leaves out: levels per attribute (every attribute of
a task moves with its global level) and DataLoader worker processes, which would keep a copy.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import reasoning_gym
from reasoning_gym.composite import DatasetSpec

from ..curriculum import Curriculum, CurriculumOptions

log = logging.getLogger(__name__)


class CurriculumData:
    """Expects the data module's ``tasks``, ``hparams``, ``splits``, ``build_item`` and
    ``_limit_prompt_length``; :meth:`init_curriculum` runs in its ``__init__``."""

    def init_curriculum(self, options: CurriculumOptions | Mapping[str, Any] | None, num_workers: int) -> dict[str, Any] | None:
        """Build the curriculum of ``data.curriculum`` (None: none) over the configured tasks and
        return its options as plain data (for hyperparameters and checkpoints)."""
        options = CurriculumOptions(**options) if isinstance(options, Mapping) else options
        self.curriculum: Curriculum | None = None
        self.prompt_tokenizer: Any = None  # set by setup; regenerated items need it
        self._start_train: list[dict[str, Any]] | None = None  # the training list as setup built it
        if options is None:
            return None
        if num_workers > 0:
            raise ValueError(f"data.num_workers={num_workers}: data.curriculum replaces training items in place, which "
                             "DataLoader worker processes would not see; set data.num_workers=0 (prompts are tokenised "
                             "up front, so workers would only collate).")
        self.curriculum = Curriculum(options, [task.name for task in self.tasks])
        self._start_configs = {}
        for task in self.tasks:
            if task.name in self.curriculum.curricula:
                overridden = self.curriculum.overridden(task.name, task.config)
                if overridden:
                    log.warning("data.tasks[%s].config: %s are set by data.curriculum at each level; these values are "
                                "not used.", task.name, ", ".join(overridden))
                self.curriculum.cap_levels(task.name, task.config)
                self._start_configs[task.name] = self.curriculum.config(task.name, task.config)
        self._items_levels = self.curriculum.levels()  # the level each task's training items are at
        return dataclasses.asdict(options)

    def start_config(self, task: Any) -> dict[str, Any]:
        """The config ``task`` (a ``TaskSpec``) draws its held-out and first training items with:
        its curriculum's at the start level, else its own."""
        return dict(self._start_configs[task.name]) if self.curriculum is not None and task.name in self._start_configs else dict(task.config)

    def apply_levels(self) -> list[str]:
        """Put each followed task's training items at its current level (after :meth:`setup`;
        before, nothing). Returns the tasks whose items changed."""
        if self.curriculum is None or "train" not in self.splits:
            return []
        if self._start_train is None:
            self._start_train = list(self.splits["train"])
        changed = [task for task, level in self.curriculum.levels().items() if level != self._items_levels[task]]
        for task in changed:
            slots = [slot for slot, item in enumerate(self._start_train) if item["task"] == task]
            level = self.curriculum.level(task)
            at_start = level == self.curriculum.options.start_level
            items = [self._start_train[slot] for slot in slots] if at_start else self._items_at_level(task, len(slots))
            for slot, item in zip(slots, items):
                self.splits["train"][slot] = item
            self._items_levels[task] = level
            log.info("data.curriculum: %d training items of %s now at level %d.", len(slots), task, level)
        return changed

    def _items_at_level(self, task: str, count: int) -> list[dict[str, Any]]:
        """``count`` training items of ``task`` at its current level, none with a held-out question,
        deterministic in the seed, the task and the level."""
        level = self.curriculum.level(task)
        config = self.curriculum.config(task, next(t.config for t in self.tasks if t.name == task))
        seed = zlib.crc32(f"{self.hparams.seed}/{task}/{level}".encode())  # the same in every process and run
        size = 20 * count + 100
        dataset = reasoning_gym.create_dataset("composite", size=size, seed=seed, datasets=[DatasetSpec(task, 1.0, config)])
        held_out = {item["entry"]["question"] for split in ("val", "test") for item in self.splits.get(split, [])}
        entries: Iterator[dict[str, Any]] = (entry for entry in map(dataset.__getitem__, range(size))
                                             if entry["question"] not in held_out)
        items: list[dict[str, Any]] = []
        while len(items) < count:
            chunk = [self.build_item(self.prompt_tokenizer, entry) for entry in islice(entries, count - len(items))]
            if not chunk:
                raise ValueError(f"data.curriculum: {task} at level {level} gave only {len(items)} of {count} training items "
                                 "whose question is not held out; lower data.train_size or widen the task's config.")
            items += self._limit_prompt_length("train", chunk)
        return items

    def state_dict(self) -> dict[str, Any]:
        """Lightning saves this in checkpoints: the curriculum's levels and windows (plain data)."""
        return {"curriculum": self.curriculum.state_dict()} if self.curriculum is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the levels and windows of a checkpoint (Lightning calls this after
        :meth:`setup`) and put the training items at those levels."""
        if "curriculum" not in state:
            return
        if self.curriculum is None:
            log.warning("The checkpoint holds data.curriculum levels %s, but data.curriculum is not set: every task keeps "
                        "its data.tasks config.", state["curriculum"]["levels"])
            return
        self.curriculum.load_state_dict(state["curriculum"])
        self.apply_levels()
