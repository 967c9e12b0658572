import json

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from motg_lightning.lightning.completions_log import FILE_NAME, CompletionsLog
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.options import GRPOOptions, LoggingOptions, RolloutOptions
from motg_lightning.models import TINY_MODEL
from test_module import datamodule, trainer

BATCH, GROUP = 2, 2  # datamodule()'s batch_size; num_generations
TERMS = ("correctness", "format")  # the default reward's terms


class TableLogger(Logger):
    """Stands in for Lightning's WandbLogger: records what ``log_table`` is given."""

    def __init__(self):
        super().__init__()
        self.tables = []

    name = "table"
    version = 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        self.tables.append({"key": key, "columns": columns, "data": data, "step": step})


def fit(every=1, **trainer_options):
    L.seed_everything(0)
    module = MoTGRPOModule(
        TINY_MODEL, rollout=RolloutOptions(max_new_tokens=6, thinking_budget=3),
        grpo=GRPOOptions(num_generations=GROUP), logging=LoggingOptions(log_completions_every_n_steps=every,
                                                                          exploration_every_n_steps=0),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
    )
    run = trainer(max_steps=2, **trainer_options)
    run.fit(module, datamodule(batch_size=BATCH))
    return run


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_rows(rows, steps):
    assert [row["step"] for row in rows] == [step for step in steps for _ in range(BATCH * GROUP)]
    for row in rows:
        assert {"step", "prompt", "completion", "reward", *TERMS} <= set(row)
        assert isinstance(row["prompt"], str) and row["prompt"] and isinstance(row["completion"], str)
        assert isinstance(row["reward"], float) and all(isinstance(row[term], float) for term in TERMS)


def test_completions_go_to_the_default_root_dir_without_a_logger(tmp_path):
    run = fit(default_root_dir=tmp_path)
    assert_rows(read_rows(tmp_path / FILE_NAME), steps=[1, 2])
    assert {"train/reward", "train/accuracy", "train/rollout_tokens_per_s"} <= set(run.progress_bar_metrics)


def test_completions_go_to_the_tensorboard_log_dir_and_text_tab(tmp_path, monkeypatch):
    texts = []
    logger = TensorBoardLogger(tmp_path)
    monkeypatch.setattr(type(logger.experiment), "add_text", lambda self, tag, text, step: texts.append((tag, step)))
    fit(logger=logger, default_root_dir=tmp_path / "root")
    assert_rows(read_rows(tmp_path / "lightning_logs" / "version_0" / FILE_NAME), steps=[1, 2])
    assert texts == [("train/completions", 1), ("train/completions", 2)]
    assert not (tmp_path / "root" / FILE_NAME).exists()


def test_completions_go_to_a_table_under_a_logger_with_log_table(tmp_path):
    logger = TableLogger()
    fit(every=2, logger=logger, default_root_dir=tmp_path)
    rows = read_rows(tmp_path / FILE_NAME)
    assert_rows(rows, steps=[1])  # batch_idx 0 only
    [table] = logger.tables
    assert table["key"] == "train/completions" and table["step"] == 1
    assert table["columns"] == list(rows[0])
    assert [dict(zip(table["columns"], values)) for values in table["data"]] == rows


def test_no_completions_are_written_when_never_asked_for(tmp_path):
    logger = TableLogger()
    fit(every=0, logger=logger, default_root_dir=tmp_path)
    assert not list(tmp_path.rglob(FILE_NAME)) and not logger.tables


def test_the_log_appends_one_object_per_line(tmp_path):
    first, second = [{"a": 1}], [{"a": "é"}, {"a": None}]
    log = CompletionsLog(tmp_path / "run" / FILE_NAME)
    log.append(first)
    log.append(second)
    assert read_rows(log.path) == first + second
