"""Training on tasks of your own: a JSONL file of question/answer pairs (the `question_file`
task, scored as its config says) and a dataset registered with Reasoning-Gym's `register_dataset`
in a module `data.task_modules` imports."""

import json
from pathlib import Path

import pytest
import reasoning_gym
from reasoning_gym.factory import DATASETS

from motg_lightning.lightning.cli import main
from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec
from motg_lightning.models import TINY_MODEL
from motg_lightning.rewards import RewardFunction

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
ROWS = [{"question": f"What is {n} + {n}?", "answer": str(2 * n)} for n in range(1, 13)]


def write(path: Path, rows: list[dict] | str) -> Path:
    """A question file of ``rows`` (or of that text)."""
    path.write_text(rows if isinstance(rows, str) else "".join(json.dumps(row) + "\n" for row in rows))
    return path


def make(path: Path, config: dict | None = None, **options) -> ReasoningGymDataModule:
    task = TaskSpec("question_file", config={"path": str(path), **(config or {})})
    sizes = {"tokenizer": TINY_MODEL, "train_size": 20, "val_size": 3, "test_size": 3, "seed": 7}
    return ReasoningGymDataModule(tasks=[task], **{**sizes, **options})


def reply(answer: str) -> str:
    return f"<think>adding</think><answer>{answer}</answer>"


def test_entries_cycle_over_the_rows_in_an_order_drawn_from_the_seed(tmp_path):
    path = write(tmp_path / "q.jsonl", [{"question": "Capital of France?", "answer": "Paris", "topic": "geography"},
                                        {"question": "2 + 2?", "answer": 4, "metadata": {"level": 1}},
                                        {"question": "3 * 3?", "answer": "9"}])
    entries = list(reasoning_gym.create_dataset("question_file", path=str(path), seed=1, size=7))
    questions = [entry["question"] for entry in entries]
    assert sorted(questions[:3]) == sorted(["Capital of France?", "2 + 2?", "3 * 3?"])
    assert questions[3:6] == questions[:3] and questions[6] == questions[0]
    by_question = {entry["question"]: entry for entry in entries}
    assert by_question["2 + 2?"]["answer"] == "4"
    assert by_question["2 + 2?"]["metadata"] == {"level": 1, "source_dataset": "question_file", "source_index": 1, "scorer": "exact"}
    assert by_question["Capital of France?"]["metadata"]["topic"] == "geography"
    orders = {tuple(e["question"] for e in reasoning_gym.create_dataset("question_file", path=str(path), seed=s, size=3))
              for s in range(8)}
    assert len(orders) > 1


def test_the_data_module_holds_questions_of_the_file_out_of_training(tmp_path):
    path = write(tmp_path / "q.jsonl", ROWS)
    splits = make(path).generate_entries()
    questions = {split: [entry["question"] for entry in entries] for split, entries in splits.items()}
    assert [len(questions[split]) for split in ("train", "val", "test")] == [20, 3, 3]
    held_out = set(questions["val"]) | set(questions["test"])
    assert len(held_out) == 6 and not held_out & set(questions["train"])
    assert set(questions["train"]) == {row["question"] for row in ROWS} - held_out  # training cycles over the rest
    assert questions["val"] != [entry["question"] for entry in make(path, seed=8).generate_entries()["val"]]


def test_a_relative_path_starts_at_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "q.jsonl", ROWS)
    monkeypatch.chdir(tmp_path)
    assert len(make(Path("q.jsonl")).generate_entries()["train"]) == 20


@pytest.mark.parametrize("scorer, oracle, right, wrong", [
    ("exact", "New York", "new  york", "Boston"),
    ("number", "1000", "+1,000.0", "999"),
    ("custom_scorers:last_word", "7", "it is 7", "7 or 8"),
    ("custom_scorers.last_word", "7", "7", "seven"),
])
def test_correctness_comes_from_the_scorer_the_config_names(tmp_path, scorer, oracle, right, wrong):
    path = write(tmp_path / "q.jsonl", [{"question": "The answer?", "answer": oracle}])
    entry = make(path, {"scorer": scorer}, train_size=1, val_size=0, test_size=0).generate_entries()["train"][0]
    scored = RewardFunction(weights={"correctness": 1.0})([reply(right), reply(wrong)], [entry, entry])
    assert scored.terms["correctness"].tolist() == [1.0, 0.0] and scored.reward_errors == 0


def test_a_scorer_that_raises_scores_0_and_is_counted(tmp_path):
    path = write(tmp_path / "q.jsonl", ROWS)
    entry = make(path, {"scorer": "custom_scorers:broken"}).generate_entries()["train"][0]
    scored = RewardFunction(weights={"correctness": 1.0})([reply(entry["answer"])], [entry])
    assert scored.terms["correctness"].tolist() == [0.0] and scored.reward_errors == 1


@pytest.mark.parametrize("content, config, message", [
    (None, {}, r"path=.*q.jsonl: no such file \(a relative path starts at the working directory"),
    ('{"question": "1 + 1?", "answer": "2"}\n{"answer": "3"}\n', {}, r"line 2: each line must be .* non-empty \"question\" string"),
    ('{"question": "1 + 1?", "answer": "2"}\n\n{"question": "2 + 2?"}\n', {}, r"line 3: each line needs an \"answer\""),
    ('{"question": "1 + 1?", "answer": ""}\n', {}, r"line 1: each line needs an \"answer\", a non-empty string or a number"),
    ("\n\n", {}, r"the file holds no questions"),
    (ROWS, {"scorer": "no_such_module.score"}, r"scorer='no_such_module.score': cannot import module 'no_such_module'"),
    (ROWS, {"scorer": "custom_scorers:missing"}, r"module 'custom_scorers' has no function 'missing'"),
    (ROWS, {"scorer": "custom_scorers:one_argument"}, r"called as function\(answer, entry\)"),
    (ROWS, {"scorer": "fuzzy"}, r"neither a built-in scorer \(exact, number\)"),
])
def test_bad_question_files_are_refused_when_the_data_module_is_built(tmp_path, content, config, message):
    path = tmp_path / "q.jsonl"
    if content is not None:
        write(path, content)
    with pytest.raises(ValueError, match=r"data.tasks\[question_file\].config=.*" + message):
        make(path, config)


def test_a_question_file_task_without_a_path_is_refused_before_training():
    module = ReasoningGymDataModule(tasks=[TaskSpec("question_file")], tokenizer=TINY_MODEL)
    with pytest.raises(ValueError, match=r"data.tasks\[question_file\].config.path: not set"):
        module.setup("fit")


def test_an_unimportable_task_module_names_the_field():
    with pytest.raises(ValueError, match=r"data.task_modules: cannot import 'no_such_tasks' .*register_dataset"):
        ReasoningGymDataModule(task_modules=["no_such_tasks"])


def test_a_dataset_registered_in_a_task_module_trains_from_yaml_alone(tmp_path):
    assert "word_length" not in DATASETS, "only data.task_modules imports custom_tasks"
    overlay = write(tmp_path / "mine.yaml", "data:\n  task_modules: [custom_tasks]\n  tasks:\n    - {name: word_length, config: {}}\n")
    cli = main(["fit", "--config", SMOKE, "--config", str(overlay), f"--trainer.default_root_dir={tmp_path}",
                "--trainer.max_steps=1"])
    assert cli.trainer.global_step == 1 and cli.datamodule.task_names == ["word_length"]
    assert {item["task"] for item in cli.datamodule.splits["train"]} == {"word_length"}
    assert cli.trainer.callback_metrics["train/reward_errors"] == 0


def test_the_shipped_question_file_overlay_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the overlay's path is relative to the working directory, as documented
    cli = main(["fit", "--config", SMOKE, "--config", "configs/tasks/questions.yaml",
                f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1"])
    assert cli.trainer.global_step == 1 and cli.datamodule.task_names == ["question_file"]
    shipped = {json.loads(line)["question"] for line in (ROOT / "configs/tasks/example_questions.jsonl").read_text().splitlines()}
    assert len(shipped) >= 20 and {item["entry"]["question"] for item in cli.datamodule.splits["train"]} <= shipped
