"""A ``LightningDataModule`` over Reasoning-Gym tasks (procedural datasets with verifiable answers).

Items of one or several tasks (a composite dataset, each task with a weight and its own config)
are split into disjoint train / validation / test sets, turned into chat prompts that ask for
``<think>…</think><answer>…</answer>``, and served as left-padded token batches that keep each
item's Reasoning-Gym entry for scoring.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import reasoning_gym
import torch
from reasoning_gym.composite import DatasetSpec
from reasoning_gym.factory import DATASETS
from torch.utils.data import DataLoader, DistributedSampler

from ..collectives import world_size
from ..curriculum import CurriculumOptions
from ..models import EMBEDDED_MODEL, load_tokenizer
from ..rewards.scoring import task_of
from ..tasks import import_task_modules, read_questions
from .curriculum_data import CurriculumData
from .resumable_loader import ResumableDataLoader

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful assistant. First think about the problem step by step inside "
    "<think> </think> tags. Then write only the final answer inside <answer> </answer> tags, "
    "in this form: <think> ... </think> <answer> ... </answer>"
)


@dataclass
class TaskSpec:
    """One Reasoning-Gym task of the mixture.

    Attributes:
        name: registered Reasoning-Gym dataset name, e.g. `basic_arithmetic`.
        weight: relative sampling weight among the tasks, > 0.
        config: options of the task's config dataclass, e.g. `{max_terms: 2}`.
    """

    name: str
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)


def validate_task(task: TaskSpec) -> None:
    """Raise a ``ValueError`` naming the field and the fix for an unknown task or option."""
    if task.name not in DATASETS:
        close = difflib.get_close_matches(task.name, DATASETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"data.tasks: unknown Reasoning-Gym task {task.name!r}.{hint} "
            f"Valid names: {', '.join(sorted(DATASETS))}."
        )
    options = {f.name for f in dataclasses.fields(DATASETS[task.name][1])} - {"seed", "size"}
    unknown = sorted(set(task.config) - options)
    if unknown:
        raise ValueError(
            f"data.tasks[{task.name}].config: unknown option(s) {unknown}; "
            f"valid options: {', '.join(sorted(options))}."
        )
    if not task.weight > 0:
        raise ValueError(f"data.tasks[{task.name}].weight={task.weight}: must be > 0.")
    try:  # Reasoning-Gym's own checks of the values (ranges, types), before any item is generated
        config = DATASETS[task.name][1](**task.config)  # some configs check in __post_init__
        if hasattr(config, "validate"):
            config.validate()
    except (AssertionError, TypeError, ValueError, KeyError) as error:
        raise ValueError(
            f"data.tasks[{task.name}].config={task.config}: Reasoning-Gym refuses these values "
            f"({error or type(error).__name__}); check each option's type and range."
        ) from error


def collate_prompts(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Left-pad ``prompt_ids`` into ``[B, P]`` tensors; keep entries and task names as lists."""
    width = max(len(item["prompt_ids"]) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    for row, item in enumerate(items):
        length = len(item["prompt_ids"])
        ids[row, width - length :] = torch.tensor(item["prompt_ids"])
        mask[row, width - length :] = 1
    return {
        "prompt_ids": ids,
        "prompt_mask": mask,
        "entries": [item["entry"] for item in items],
        "tasks": [item["task"] for item in items],
        **({"indices": [item["index"] for item in items]} if "index" in items[0] else {}),
    }


class ReasoningGymDataModule(CurriculumData, L.LightningDataModule):
    """Reasoning-Gym prompts for MoT-GRPO.

    Args:
        tasks: the tasks to mix (a composite dataset); default `basic_arithmetic`.
        tokenizer: model name whose tokenizer and chat template build the prompts (linked to
            `model.model_name_or_path` by the CLI).
        train_size: training items, at least 1 (a training question may repeat).
        val_size: validation items; no question of this split occurs in another split.
        test_size: test items; no question of this split occurs in another split.
        seed: Reasoning-Gym seed; the same seed gives the same items and order.
        batch_size: prompts per training step (each is rolled out `num_generations` times).
        eval_batch_size: prompts per validation/test batch.
        system_prompt: system message; the default asks for `<think>`/`<answer>` tags.
        prefill_think: end the prompt with the assistant turn opened by `<think>` and a newline
            (the paper's prompts).
        chat_template: Jinja template for tokenizers that have none.
        num_workers: DataLoader worker processes; 0 loads in the main process.
        max_prompt_length: prompt tokens at most (TRL's `max_prompt_length`); None keeps every
            prompt whole.
        long_prompts: what happens to a longer prompt: `drop` it, or `truncate` it from the
            left (keeping the question's end and the opened assistant turn, as TRL does). The
            counts are in the `prompt_counts` attribute and logged as a warning.
        predict_file: JSONL file of questions `predict` answers (one `{"question": ...}` per line,
            with Reasoning-Gym's `answer` and `metadata` to be scored); None: the test split.
        task_modules: Python modules to import before the tasks are checked, e.g. `[my_tasks]`: ones
            that call `reasoning_gym.register_dataset`, so that `tasks` can name their datasets.
        curriculum: raise a task's Reasoning-Gym curriculum level as its rolling training accuracy
            rises (CurriculumOptions); held-out items stay at the start level. None: fixed configs.
    """

    def __init__(
        self,
        tasks: list[TaskSpec] | None = None,
        tokenizer: str = EMBEDDED_MODEL,
        train_size: int = 1000,
        val_size: int = 32,
        test_size: int = 32,
        seed: int = 42,
        batch_size: int = 2,
        eval_batch_size: int = 16,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        prefill_think: bool = True,
        chat_template: str | None = None,
        num_workers: int = 0,
        max_prompt_length: int | None = None,
        long_prompts: Literal["drop", "truncate"] = "drop",
        predict_file: str | None = None,
        task_modules: list[str] | None = None,
        curriculum: CurriculumOptions | None = None,
    ):
        super().__init__()
        import_task_modules(task_modules or [])
        self.tasks = [TaskSpec(**t) if isinstance(t, dict) else t for t in (tasks or [TaskSpec("basic_arithmetic")])]
        for task in self.tasks:
            validate_task(task)
        if len({task.name for task in self.tasks}) != len(self.tasks):
            raise ValueError("data.tasks: each task may appear once; merge duplicate entries.")
        if max_prompt_length is not None and max_prompt_length < 1:
            raise ValueError(f"data.max_prompt_length={max_prompt_length}: must be at least 1, or null for no limit.")
        if long_prompts not in ("drop", "truncate"):
            raise ValueError(f"data.long_prompts={long_prompts!r}: choose drop or truncate.")
        for name in ("train_size", "batch_size", "eval_batch_size"):
            if locals()[name] < 1:
                raise ValueError(f"data.{name}={locals()[name]}: must be at least 1.")
        for name in ("val_size", "test_size", "num_workers"):
            if locals()[name] < 0:
                raise ValueError(f"data.{name}={locals()[name]}: must be >= 0.")
        tasks = [dataclasses.asdict(task) for task in self.tasks]  # plain data in hparams and checkpoints
        curriculum = self.init_curriculum(curriculum, num_workers)
        self.save_hyperparameters()
        self.predict_entries = read_questions(predict_file) if predict_file is not None else []
        self.splits: dict[str, list[dict[str, Any]]] = {}
        self.pad_id = 0
        self.prompt_counts = {"dropped": 0, "truncated": 0}

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def generate_entries(self) -> dict[str, list[dict[str, Any]]]:
        """Reasoning-Gym entries of each split, deterministic in the seed.

        Validation and test items are drawn first, each question at most once; training items
        come after them and never repeat a held-out question (a training question may repeat,
        as easy tasks have few distinct questions). Raises if the task has too few questions.
        """
        sizes = {"val": self.hparams.val_size, "test": self.hparams.test_size, "train": self.hparams.train_size}
        budget = 20 * sum(sizes.values()) + 100
        dataset = reasoning_gym.create_dataset(
            "composite", size=budget, seed=self.hparams.seed,
            datasets=[DatasetSpec(t.name, t.weight, self.start_config(t)) for t in self.tasks],
        )
        indices = iter(range(budget))
        splits: dict[str, list[dict[str, Any]]] = {split: [] for split in sizes}
        held_out: set[str] = set()
        for split, size in sizes.items():
            for index in indices:
                if len(splits[split]) == size:
                    break
                entry = dataset[index]
                if entry["question"] in held_out:
                    continue
                splits[split].append(entry)
                if split != "train":
                    held_out.add(entry["question"])
            if len(splits[split]) < size:
                raise ValueError(
                    f"data.{split}_size={size}: the tasks gave only {len(splits[split])} {split} items whose question "
                    "is not held out elsewhere; lower the split sizes or widen the task configs."
                )
        return {split: splits[split] for split in ("train", "val", "test")}

    def build_prompt(self, tokenizer, question: str) -> list[int]:
        """Token ids of the chat prompt for one question, assistant turn opened."""
        messages = [{"role": "system", "content": self.hparams.system_prompt}, {"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self.hparams.prefill_think:
            text += "<think>\n"
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def build_item(self, tokenizer, entry: dict[str, Any]) -> dict[str, Any]:
        """A dataset item: the entry's prompt ids, the entry and its task."""
        return {"prompt_ids": self.build_prompt(tokenizer, entry["question"]), "entry": entry, "task": task_of(entry)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tokenizer = load_tokenizer(self.hparams.tokenizer, field="data.tokenizer")
        if self.hparams.chat_template is not None:
            tokenizer.chat_template = self.hparams.chat_template
        if not tokenizer.chat_template:
            raise ValueError(
                f"data.chat_template: the tokenizer of {self.hparams.tokenizer!r} has no chat template; "
                "give one (a Jinja string) in data.chat_template."
            )
        self.pad_id, self.prompt_tokenizer = tokenizer.pad_token_id, tokenizer
        splits = self.generate_entries()
        if self.predict_entries:
            splits["predict"] = self.predict_entries
        for split, entries in splits.items():
            self.splits[split] = self._limit_prompt_length(split, [self.build_item(tokenizer, e) for e in entries])
        self.apply_levels()  # levels a checkpoint restored before setup (Lightning restores after it)

    @property
    def longest_prompt(self) -> int:
        """Tokens of the longest prompt of any split (after :meth:`setup`)."""
        return max((len(item["prompt_ids"]) for items in self.splits.values() for item in items), default=0)

    def _limit_prompt_length(self, split: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit, action = self.hparams.max_prompt_length, self.hparams.long_prompts
        long = [item for item in items if limit is not None and len(item["prompt_ids"]) > limit]
        if not long:
            return items
        log.warning("data.max_prompt_length=%d: %s %d of %d %s prompts (data.long_prompts).", limit,
                    "truncated" if action == "truncate" else "dropped", len(long), len(items), split)
        if action == "truncate":
            for item in long:
                item["prompt_ids"] = item["prompt_ids"][-limit:]
            self.prompt_counts["truncated"] += len(long)
            return items
        self.prompt_counts["dropped"] += len(long)
        kept = [item for item in items if len(item["prompt_ids"]) <= limit]
        if not kept:
            raise ValueError(f"data.max_prompt_length={limit}: every {split} prompt is longer; raise it or set data.long_prompts=truncate.")
        return kept

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return ResumableDataLoader(
            self.splits[split], batch_size=batch_size, shuffle=shuffle, generator=generator,
            collate_fn=functools.partial(collate_prompts, pad_id=self.pad_id), num_workers=self.hparams.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The questions of `data.predict_file`, else the test split, in order, each with its
        index. Across processes every rank gets as many batches (the last questions repeated:
        rollouts step together), and the writer keeps each index once."""
        items = [{**item, "index": index} for index, item in enumerate(self.splits["predict" if self.predict_entries else "test"])]
        sampler = DistributedSampler(items, shuffle=False) if world_size() > 1 else None
        return DataLoader(items, batch_size=self.hparams.eval_batch_size, sampler=sampler, num_workers=self.hparams.num_workers,
                          collate_fn=functools.partial(collate_prompts, pad_id=self.pad_id))
