"""Training curricula: each task's difficulty follows its rolling training accuracy.

Reasoning-Gym ships a curriculum for most of its tasks (``reasoning_gym.factory.create_curriculum``,
``has_curriculum``): attributes such as ``basic_arithmetic``'s number of terms and of digits, each
with a list of levels. A *global level* sets every attribute to that level (capped at its last;
``BaseCurriculum.set_global_level``), and ``generate_configuration`` turns the levels into the
task's config. :class:`Curriculum` keeps one such curriculum per task and moves its global level
one step up when the task's accuracy over its last ``window`` training completions is at least
``raise_above``, one step down when it is below ``lower_below`` — the use
``reasoning_gym.coaching.CurriculumExperiment.update_difficulty`` is made for. Pure logic: the
data module regenerates the items and a callback feeds the outcomes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reasoning_gym.coaching import BaseCurriculum, RangeAttributeDefinition
from reasoning_gym.coaching.base_curriculum import (
    DefaultCurriculumContext,
    RangeAttributeMode,
)
from reasoning_gym.factory import create_curriculum, create_dataset, has_curriculum

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurriculumOptions:
    """`data.curriculum`: raise a task's Reasoning-Gym curriculum level when it is mastered.

    Args:
        tasks: tasks of data.tasks whose difficulty follows their Reasoning-Gym curriculum; null:
            every configured task that has one. A task without one is refused.
        raise_above: rolling training accuracy (share of completions scored exactly 1) at or above
            which a task goes one level up, in (0, 1].
        lower_below: rolling accuracy below which a task goes one level down, in [0, raise_above);
            null never lowers.
        window: training completions of a task the accuracy is taken over, at least 1; the window
            restarts after each level change, so a new level is judged on its own completions.
        start_level: every followed task's level at the start (Reasoning-Gym's global level), >= 0.
        range_mode: how a level becomes a range option such as min_terms/max_terms: inclusive keeps
            every level up to the current one in the range (easier items stay in the mix),
            upper_bound only the current level's segment (Reasoning-Gym's RangeAttributeMode).
    """

    tasks: list[str] | None = None
    raise_above: float = 0.8
    lower_below: float | None = None
    window: int = 64
    start_level: int = 0
    range_mode: Literal["inclusive", "upper_bound"] = "inclusive"

    def __post_init__(self) -> None:
        if self.tasks is not None and not self.tasks:
            raise ValueError("data.curriculum.tasks=[]: name at least one task, or null for every task with a curriculum.")
        if not 0 < self.raise_above <= 1:
            raise ValueError(f"data.curriculum.raise_above={self.raise_above}: must be in (0, 1].")
        if self.lower_below is not None and not 0 <= self.lower_below < self.raise_above:
            raise ValueError(f"data.curriculum.lower_below={self.lower_below}: must be in [0, raise_above={self.raise_above}), "
                             "or null never to lower a level.")
        if self.window < 1:
            raise ValueError(f"data.curriculum.window={self.window}: must be at least 1.")
        if self.start_level < 0:
            raise ValueError(f"data.curriculum.start_level={self.start_level}: must be >= 0.")
        if self.range_mode not in ("inclusive", "upper_bound"):
            raise ValueError(f"data.curriculum.range_mode={self.range_mode!r}: choose inclusive or upper_bound.")


def curriculum_fields(curriculum: BaseCurriculum) -> list[str]:
    """The config fields a Reasoning-Gym curriculum sets (both ends of each range attribute)."""
    names: list[str] = []
    for attr in curriculum.attributes.values():
        if isinstance(attr, RangeAttributeDefinition):
            names += [attr.lower_field_name, attr.upper_field_name]
        else:
            names.append(attr.field_name)
    return names


def max_level(curriculum: BaseCurriculum) -> int:
    """The highest global level: the last level of the attribute with the most levels."""
    return max((len(attr.levels) - 1 for attr in curriculum.attributes.values()), default=0)


class Curriculum:
    """Per followed task: its Reasoning-Gym curriculum (at the task's current global level) and
    the outcomes of its latest training completions.

    Args:
        options: the thresholds, window and start level.
        task_names: the configured tasks (``data.tasks``); a task of ``options.tasks`` must be one.
    """

    def __init__(self, options: CurriculumOptions, task_names: Sequence[str]):
        self.options = options
        self.context = DefaultCurriculumContext(mode=RangeAttributeMode(options.range_mode))
        for name in options.tasks or []:
            if name not in task_names:
                raise ValueError(f"data.curriculum.tasks: {name!r} is not one of data.tasks ({', '.join(task_names)}); "
                                 "add it there or leave it out.")
            if not has_curriculum(name):
                raise ValueError(f"data.curriculum.tasks: Reasoning-Gym has no curriculum for {name!r} (has_curriculum); "
                                 "leave it out of data.curriculum.tasks and it keeps its data.tasks config.")
        names = options.tasks if options.tasks is not None else [name for name in task_names if has_curriculum(name)]
        if not names:
            raise ValueError(f"data.curriculum: none of data.tasks ({', '.join(task_names)}) has a Reasoning-Gym "
                             "curriculum; remove data.curriculum or add a task that has one.")
        self.curricula = {name: create_curriculum(name) for name in names}
        self.top = {name: max_level(curriculum) for name, curriculum in self.curricula.items()}  # see cap_levels
        self.windows: dict[str, deque[bool]] = {name: deque(maxlen=options.window) for name in names}
        for name, curriculum in self.curricula.items():
            if options.start_level > self.top[name]:
                raise ValueError(f"data.curriculum.start_level={options.start_level}: {name} has levels 0 to "
                                 f"{self.top[name]}.")
            curriculum.set_global_level(options.start_level)

    @property
    def tasks(self) -> list[str]:
        """The followed tasks."""
        return list(self.curricula)

    def level(self, task: str) -> int:
        """The task's current global level."""
        return self.curricula[task].get_max_level()

    def levels(self) -> dict[str, int]:
        return {task: self.level(task) for task in self.curricula}

    def accuracy(self, task: str) -> float | None:
        """Share of correct completions in the task's window; None while it is empty."""
        window = self.windows[task]
        return sum(window) / len(window) if window else None

    def record(self, tasks: Sequence[str], correct: Sequence[bool]) -> list[str]:
        """Add one step's outcomes (a task name and whether it was scored exactly 1, per
        completion; tasks not followed are skipped) and move each task whose full window passes a
        threshold by one level, at most one per call. Returns the tasks whose level changed."""
        changed = []
        for task in dict.fromkeys(tasks):
            if task not in self.curricula:
                continue
            window = self.windows[task]
            window.extend(bool(ok) for name, ok in zip(tasks, correct) if name == task)
            if len(window) < self.options.window:
                continue
            accuracy, level = self.accuracy(task), self.level(task)
            lower = self.options.lower_below is not None and accuracy < self.options.lower_below
            target = level + 1 if accuracy >= self.options.raise_above else level - 1 if lower else level
            if 0 <= target <= self.top[task] and target != level:
                self.curricula[task].set_global_level(target)
                window.clear()  # the new level is judged on its own completions
                log.info("data.curriculum: %s level %d -> %d (accuracy %.2f over %d completions).",
                         task, level, target, accuracy, self.options.window)
                changed.append(task)
        return changed

    def config(self, task: str, user_config: Mapping[str, Any]) -> dict[str, Any]:
        """The task's config at its current level: the fields its curriculum sets
        (``generate_configuration`` under ``range_mode``), over the user's other options."""
        curriculum = self.curricula[task]
        try:  # the generated dataclass checks itself (some configs in __post_init__, others in validate)
            generated = curriculum.generate_configuration(defaults=dict(user_config), context=self.context)
            if hasattr(generated, "validate"):
                generated.validate()
        except (AssertionError, TypeError, ValueError, KeyError) as error:
            raise ValueError(f"data.curriculum: {task} at level {self.level(task)}: Reasoning-Gym refuses the config "
                             f"({error or type(error).__name__}); check the other options of data.tasks[{task}].config.") from error
        return {**user_config, **{name: getattr(generated, name) for name in curriculum_fields(curriculum)}}

    def cap_levels(self, task: str, user_config: Mapping[str, Any], samples: int = 1) -> None:
        """Stop ``task`` below the first level, above the start level, whose config Reasoning-Gym
        refuses or from which it cannot draw ``samples`` items (some curricula end in settings their
        own task rejects), with a warning, so that no level change fails in the middle of training.
        The start level's config must work: its error is raised."""
        curriculum, start = self.curricula[task], self.level(task)
        self.config(task, user_config)  # the start level: its error names the task's options
        for level in range(start + 1, self.top[task] + 1):
            curriculum.set_global_level(level)
            try:
                dataset = create_dataset(task, **{**self.config(task, user_config), "size": samples, "seed": 0})
                for index in range(samples):
                    dataset[index]
            except Exception as error:  # noqa: BLE001 - any failure of the task's own code at this level
                log.warning("data.curriculum: %s stops at level %d: Reasoning-Gym fails at level %d (%s).",
                            task, level - 1, level, error)
                self.top[task] = level - 1
                break
        curriculum.set_global_level(start)

    def overridden(self, task: str, user_config: Mapping[str, Any]) -> list[str]:
        """The user's options of ``task`` that its curriculum sets instead."""
        return sorted(set(user_config) & set(curriculum_fields(self.curricula[task])))

    def state_dict(self) -> dict[str, Any]:
        """Plain data: each task's level and the outcomes in its window."""
        return {"levels": self.levels(), "windows": {task: list(window) for task, window in self.windows.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore levels and windows of the tasks followed now; a saved task no longer followed
        is left out with a warning."""
        ignored = sorted(set(state["levels"]) - set(self.curricula))
        if ignored:
            log.warning("data.curriculum: the checkpoint's levels of %s are not restored: not followed now.", ignored)
        for task, level in state["levels"].items():
            if task in self.curricula:
                self.curricula[task].set_global_level(min(int(level), self.top[task]))
                self.windows[task].clear()
                self.windows[task].extend(state["windows"].get(task, []))
