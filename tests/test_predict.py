"""Issue 15: `python main.py predict` writes one JSONL row per question × sample, scored as
`validate`/`test` score the same rollouts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from motg_lightning.lightning.cli import main
from motg_lightning.rewards.scoring import RewardFunction

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FIELDS = {"index", "sample", "task", "question", "completion", "thinking", "answer", "score", "completion_length", "thinking_length"}


def predict(folder, *extra):
    cli = main(["predict", "--config", SMOKE, f"--trainer.default_root_dir={folder}", *extra])
    return cli, [json.loads(line) for line in (Path(folder) / "predictions.jsonl").read_text().splitlines()]


def write_questions(path, entries):
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return str(path)


def test_predict_from_a_checkpoint_writes_a_row_per_test_question(tmp_path):
    """As a user runs it after `fit`. (Lightning's CLI takes the module's settings from the
    checkpoint, over the command line's.)"""
    main(["fit", "--config", SMOKE, f"--trainer.default_root_dir={tmp_path / 'fit'}", "--trainer.limit_val_batches=0"])
    checkpoint = next((tmp_path / "fit").rglob("*.ckpt"))
    cli, rows = predict(tmp_path, f"--ckpt_path={checkpoint}")
    assert [row["question"] for row in rows] == [item["entry"]["question"] for item in cli.datamodule.splits["test"]]
    assert all(set(row) == FIELDS for row in rows)


def test_predict_writes_a_row_per_test_question_and_sample_with_every_field(tmp_path):
    cli, rows = predict(tmp_path, "--model.evaluation.samples=2", "--model.evaluation.decoding=sample")
    test_questions = [item["entry"]["question"] for item in cli.datamodule.splits["test"]]
    assert [(row["index"], row["sample"]) for row in rows] == [(i, s) for i in range(len(test_questions)) for s in range(2)]
    assert [row["question"] for row in rows] == [q for q in test_questions for _ in range(2)]
    for row in rows:
        assert set(row) == FIELDS
        assert isinstance(row["score"], float) and row["task"] == "basic_arithmetic"
        assert 0 < row["completion_length"] <= 12 and 0 <= row["thinking_length"] <= 4
        assert row["completion"].startswith(row["thinking"])


def test_predict_rows_score_as_test_accuracy_counts_with_greedy_decoding(tmp_path, monkeypatch):
    """The rows' scores are the ones `test` counts (a stand-in scorer marks the products
    correct, so the comparison is not between zeros)."""
    monkeypatch.setattr(RewardFunction, "score", lambda self, answer, entry: float("*" in entry["question"]))
    flags = ["--model.evaluation.decoding=greedy", "--model.evaluation.samples=1"]
    tested = main(["test", "--config", SMOKE, f"--trainer.default_root_dir={tmp_path / 'test'}", *flags])
    _, rows = predict(tmp_path / "predict", *flags)
    expected = [float("*" in row["question"]) for row in rows]
    assert [row["score"] for row in rows] == expected and 0 < sum(expected) < len(expected)
    accuracy = float(tested.trainer.callback_metrics["test/accuracy"])
    assert accuracy == pytest.approx(sum(row["score"] == 1.0 for row in rows) / len(rows))


def test_a_questions_file_is_answered_and_scored_where_it_can_be(tmp_path):
    questions = write_questions(tmp_path / "questions.jsonl", [
        {"question": "What is 2 + 3?", "answer": "5", "metadata": {"source_dataset": "basic_arithmetic"}},
        {"question": "Name a colour."},
        {"question": "What is 1 + 1?", "answer": "2", "metadata": {"source_dataset": "basic_arithmetic"}},
    ])
    _, rows = predict(tmp_path, f"--data.predict_file={questions}", "--model.evaluation.samples=2")
    assert [row["question"] for row in rows] == ["What is 2 + 3?"] * 2 + ["Name a colour."] * 2 + ["What is 1 + 1?"] * 2
    assert [row["score"] is None for row in rows] == [False, False, True, True, False, False]
    assert [row["task"] for row in rows[::2]] == ["basic_arithmetic", "questions", "basic_arithmetic"]
    assert all(set(row) == FIELDS for row in rows)


def test_a_questions_file_without_answers_scores_nothing(tmp_path):
    questions = write_questions(tmp_path / "questions.jsonl", [{"question": "Name a colour."}, {"question": "Why?"}])
    _, rows = predict(tmp_path, f"--data.predict_file={questions}")
    assert [row["question"] for row in rows] == ["Name a colour.", "Why?"]
    assert all(row["score"] is None for row in rows)


@pytest.mark.parametrize("content, message", [
    (None, r"data.predict_file=.*: no such file"),
    ('{"question": "ok"}\n{"question": "broken"\n', r"data.predict_file=.*, line 2: not JSON"),
    ('{"question": "ok"}\n\n["a list"]\n', r"data.predict_file=.*, line 3: each line must be a JSON object"),
    ('{"answer": "5"}\n', r"data.predict_file=.*, line 1: .*\"question\" string"),
    ('{"question": "ok", "metadata": "basic_arithmetic"}\n', r"line 1: \"metadata\" must be a JSON object"),
    ("\n\n", r"data.predict_file=.*: the file holds no questions"),
])
def test_a_bad_questions_file_is_refused_naming_the_field_and_line(tmp_path, content, message):
    path = tmp_path / "questions.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        main(["predict", "--config", SMOKE, f"--trainer.default_root_dir={tmp_path}", f"--data.predict_file={path}"])


def test_the_command_line_refuses_a_missing_file_with_its_field_and_status_2(tmp_path):
    result = subprocess.run([sys.executable, "main.py", "predict", "--config", SMOKE, f"--data.predict_file={tmp_path / 'no.jsonl'}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.predict_file=")


def test_a_configured_writer_replaces_the_default_one(tmp_path):
    output = tmp_path / "mine" / "rows.jsonl"
    main(["predict", "--config", SMOKE, f"--trainer.default_root_dir={tmp_path}",
          "--trainer.callbacks+=motg_lightning.lightning.prediction_writer.PredictionsJsonl", f"--trainer.callbacks.output={output}"])
    assert len(output.read_text().splitlines()) == 4
    assert not (tmp_path / "predictions.jsonl").exists()


def test_predict_help_exits_0():
    result = subprocess.run([sys.executable, "main.py", "predict", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--data.predict_file" in result.stdout
