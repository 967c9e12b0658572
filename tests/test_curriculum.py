"""data.curriculum: Reasoning-Gym curriculum levels that follow the rolling training accuracy
(motg_lightning/curriculum.py), the training items that follow the levels, and a run that raises a
level and resumes at it."""

import json

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from motg_lightning.curriculum import Curriculum, CurriculumOptions
from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.options import GRPOOptions, RolloutOptions
from motg_lightning.models import TINY_MODEL
from motg_lightning.rewards.scoring import RewardFunction

ARITHMETIC = "basic_arithmetic"


def curriculum(**options):
    return Curriculum(CurriculumOptions(**options), [ARITHMETIC, "acre"])


def test_a_full_window_at_the_threshold_raises_the_level_and_restarts_the_window():
    levels = curriculum(window=4, raise_above=0.75)
    assert levels.tasks == [ARITHMETIC], "null tasks: every configured task that has a curriculum (acre has none)"
    assert levels.record([ARITHMETIC] * 3 + ["acre"], [True, True, True, True]) == [], "the window is not full yet"
    assert levels.record([ARITHMETIC], [False]) == [ARITHMETIC] and levels.level(ARITHMETIC) == 1
    assert levels.accuracy(ARITHMETIC) is None, "the new level starts with an empty window"
    assert levels.record([ARITHMETIC] * 3, [True] * 3) == [] and levels.level(ARITHMETIC) == 1
    assert levels.record([ARITHMETIC] * 8, [True] * 8) == [ARITHMETIC] and levels.level(ARITHMETIC) == 2, "one level per step"


def test_a_low_accuracy_lowers_the_level_down_to_0_and_the_top_level_stays():
    levels = curriculum(window=2, lower_below=0.5, start_level=1)
    assert levels.record([ARITHMETIC] * 2, [True, False]) == [], "0.5 is neither below lower_below nor at raise_above"
    assert levels.record([ARITHMETIC] * 2, [False, False]) == [ARITHMETIC] and levels.level(ARITHMETIC) == 0
    assert levels.record([ARITHMETIC] * 2, [False, False]) == [] and levels.level(ARITHMETIC) == 0
    top = curriculum(window=1, start_level=4)
    assert top.record([ARITHMETIC], [True]) == [] and top.level(ARITHMETIC) == 4
    assert top.accuracy(ARITHMETIC) == 1.0, "at the top level the window keeps rolling"


def test_the_config_at_a_level_is_the_curriculum_s_over_the_user_s_other_options():
    levels = curriculum(window=1)
    user = {"operators": ["+"], "max_terms": 6}
    assert levels.overridden(ARITHMETIC, user) == ["max_terms"]
    start = levels.config(ARITHMETIC, user)
    assert start == {"operators": ["+"], "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    levels.record([ARITHMETIC], [True])
    levels.record([ARITHMETIC], [True])
    assert levels.config(ARITHMETIC, user) == {**start, "max_terms": 4, "max_digits": 3}, "inclusive: levels 0 to 2"
    upper = curriculum(start_level=2, range_mode="upper_bound").config(ARITHMETIC, user)
    assert (upper["min_terms"], upper["max_terms"], upper["min_digits"]) == (4, 4, 3)


def test_levels_reasoning_gym_itself_refuses_are_never_reached():
    """caesar_cipher's curriculum goes on to rotations its own config refuses (level 2); the task
    stops at level 1 instead of failing in the middle of training."""
    curriculum = Curriculum(CurriculumOptions(window=1, raise_above=0.5), ["caesar_cipher"])
    curriculum.cap_levels("caesar_cipher", {})
    assert curriculum.top["caesar_cipher"] == 1 and curriculum.level("caesar_cipher") == 0
    for _ in range(4):
        curriculum.record(["caesar_cipher"], [True])
    assert curriculum.level("caesar_cipher") == 1
    curriculum.load_state_dict({"levels": {"caesar_cipher": 3}, "windows": {}})
    assert curriculum.level("caesar_cipher") == 1


def test_the_state_is_plain_data_and_round_trips():
    levels = curriculum(window=3)
    levels.record([ARITHMETIC] * 3, [True] * 3)
    levels.record([ARITHMETIC] * 2, [True, False])
    state = json.loads(json.dumps(levels.state_dict()))
    assert state == {"levels": {ARITHMETIC: 1}, "windows": {ARITHMETIC: [True, False]}}
    restored = curriculum(window=3)
    restored.load_state_dict(state)
    assert restored.state_dict() == state and restored.config(ARITHMETIC, {}) == levels.config(ARITHMETIC, {})
    assert restored.record([ARITHMETIC], [True]) == [], "2 of 3 is below 0.8: the restored window counted"


@pytest.mark.parametrize("options, message", [
    ({"raise_above": 1.5}, r"data.curriculum.raise_above=1.5: must be in \(0, 1\]"),
    ({"raise_above": 0.6, "lower_below": 0.7}, "data.curriculum.lower_below=0.7: must be in"),
    ({"window": 0}, "data.curriculum.window=0: must be at least 1"),
    ({"start_level": -1}, "data.curriculum.start_level=-1"),
    ({"tasks": []}, r"data.curriculum.tasks=\[\]: name at least one task"),
])
def test_impossible_options_are_refused_naming_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        CurriculumOptions(**options)


def test_a_task_without_a_curriculum_is_refused_at_start_up_naming_it():
    with pytest.raises(ValueError, match="no curriculum for 'acre'"):
        curriculum(tasks=["acre"])
    with pytest.raises(ValueError, match="'leg_counting' is not one of data.tasks"):
        curriculum(tasks=["leg_counting"])
    with pytest.raises(ValueError, match=r"data.curriculum: none of data.tasks \(acre\)"):
        ReasoningGymDataModule(tasks=[TaskSpec("acre")], curriculum=CurriculumOptions())
    with pytest.raises(ValueError, match="data.curriculum.start_level=5: basic_arithmetic has levels 0 to 4"):
        curriculum(start_level=5)
    with pytest.raises(ValueError, match="data.num_workers=2: data.curriculum replaces training items in place"):
        ReasoningGymDataModule(num_workers=2, curriculum=CurriculumOptions())


def datamodule(**options):
    return ReasoningGymDataModule(
        tasks=[TaskSpec(ARITHMETIC, config={"operators": ["+"]}), TaskSpec("leg_counting", config={"min_animals": 1, "max_animals": 2})],
        tokenizer=TINY_MODEL, train_size=24, val_size=6, test_size=6, batch_size=2, eval_batch_size=4,
        curriculum=CurriculumOptions(**{"tasks": [ARITHMETIC], **options}),
    )


def questions(items):
    return [item["entry"]["question"] for item in items]


def test_a_level_change_replaces_only_that_task_s_training_items_and_held_out_stays():
    data = datamodule(window=2)
    data.setup("fit")
    train, held_out = list(data.splits["train"]), {split: questions(data.splits[split]) for split in ("val", "test")}
    assert all(item["entry"]["metadata"]["difficulty"]["num_terms"] == (2, 2) for item in data.splits["val"]
               if item["task"] == ARITHMETIC), "held-out items are drawn at the start level"
    data.curriculum.record([ARITHMETIC] * 4, [True] * 4)
    assert data.apply_levels() == [ARITHMETIC] and data.apply_levels() == []
    changed = [slot for slot, (old, new) in enumerate(zip(train, data.splits["train"])) if old is not new]
    assert changed == [slot for slot, item in enumerate(train) if item["task"] == ARITHMETIC] and changed
    assert all(data.splits["train"][slot]["entry"]["metadata"]["difficulty"] == {"num_terms": (2, 3), "num_digits": (1, 2)}
               for slot in changed)
    assert {split: questions(data.splits[split]) for split in held_out} == held_out
    assert not set(questions(data.splits["train"])) & {q for split in held_out.values() for q in split}

    again = datamodule(window=2)  # the same seed, task and level give the same items (what a resumed run relies on)
    again.setup("fit")
    again.load_state_dict(data.state_dict())
    assert questions(again.splits["train"]) == questions(data.splits["train"])
    data.curriculum.load_state_dict({"levels": {ARITHMETIC: 0}, "windows": {}})
    data.apply_levels()
    assert questions(data.splits["train"]) == questions(train), "back at the start level: the first items again"


class AlwaysRight(RewardFunction):
    """Scores every answer 1: a run whose training accuracy is 1 whatever the tiny model writes."""

    def score(self, answer, entry):
        return 1.0


def fit(data, reward, max_steps, directory, ckpt_path=None):
    module = MoTGRPOModule(TINY_MODEL, reward=reward, rollout=RolloutOptions(max_new_tokens=4),
                           grpo=GRPOOptions(num_generations=2, beta=0.0))
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, limit_val_batches=0, enable_model_summary=False, default_root_dir=directory,
                        callbacks=[ModelCheckpoint(dirpath=directory, every_n_train_steps=2, save_top_k=-1)])
    # weights_only=False: the checkpoint's hyperparameters hold this file's own reward class
    trainer.fit(module, data, ckpt_path=ckpt_path, weights_only=False if ckpt_path else None)
    return trainer


def test_a_run_raises_the_level_when_accuracy_is_high_and_resumes_at_it(tmp_path):
    data = ReasoningGymDataModule(tasks=[TaskSpec(ARITHMETIC, config={"operators": ["+"]})], tokenizer=TINY_MODEL,
                                  train_size=8, val_size=4, test_size=4, curriculum=CurriculumOptions(window=4, raise_above=1.0))
    trainer = fit(data, AlwaysRight(), 2, tmp_path / "first")
    assert data.curriculum.levels() == {ARITHMETIC: 2}, "each step's 4 completions fill the window, all correct"
    assert trainer.callback_metrics["curriculum/basic_arithmetic_level"] == 2
    assert all(item["entry"]["metadata"]["difficulty"] == {"num_terms": (2, 4), "num_digits": (1, 3)}
               for item in data.splits["train"])

    fresh = ReasoningGymDataModule(**data.hparams)  # the curriculum's options as plain data, as a checkpoint holds them
    resumed = fit(fresh, RewardFunction(), 3, tmp_path / "resumed", ckpt_path=tmp_path / "first" / "epoch=0-step=2.ckpt")
    assert resumed.global_step == 3
    assert fresh.curriculum.levels() == {ARITHMETIC: 2}, "restored from the checkpoint (the tiny model's wrong answers never raise it)"
    assert questions(fresh.splits["train"]) == questions(data.splits["train"]), "the same training items at that level"
    assert resumed.callback_metrics["curriculum/basic_arithmetic_level"] == 2
