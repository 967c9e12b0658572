"""The benchmark scripts keep running (figures in docs come from them); no timings are checked."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rounds(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # where the scripts import their helpers from
    import rounds

    return rounds


def test_rounds_rotate_the_order_so_each_method_takes_each_place(rounds):
    assert [rounds.rotated("abc", shift) for shift in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert rounds.rotated([], 2) == []


def test_median_and_spread(rounds):
    assert rounds.median([3.0, 1.0, 2.0]) == 2.0 and rounds.median([1.0, 4.0]) == 2.5 and rounds.median([]) is None
    assert rounds.spread([3.0, 1.0, 2.0]) == [1.0, 3.0] and rounds.spread([]) is None


def test_ratios_are_taken_round_by_round(rounds):
    """A slow round slows both sides of its ratio: the ratio stays put where the figures do not."""
    per_round = [{"a": 10.0, "base": 5.0}, {"a": 40.0, "base": 20.0}, {"a": 9.0}, {"a": 30.0, "base": 10.0}]
    assert rounds.round_ratios(per_round, "a", "base") == [2.0, 2.0, 3.0]  # round 3 has no baseline
    summary = rounds.summarize(per_round, ["a", "base", "missing"], "base")
    assert set(summary) == {"a", "base"}
    assert summary["a"]["rounds"] == [10.0, 40.0, 9.0, 30.0] and summary["base"]["rounds"] == [5.0, 20.0, None, 10.0]
    assert summary["a"]["median"] == 20.0 and summary["a"]["spread"] == [9.0, 40.0]
    assert summary["a"]["ratio_median"] == 2.0 and summary["a"]["ratio_spread"] == [2.0, 3.0]
    assert summary["base"]["ratios"] == [1.0, 1.0, 1.0]
    unbased = rounds.summarize(per_round, ["a"], None)["a"]
    assert unbased["ratios"] == [] and unbased["ratio_median"] is None and unbased["ratio_spread"] is None


def test_the_baseline_is_the_first_candidate_present(rounds):
    assert rounds.first_present(["hf_generate_static", "hf_generate"], ["dirichlet", "hf_generate"]) == "hf_generate"
    assert rounds.first_present(["hf_generate_static", "hf_generate"], ["dirichlet"]) is None


def test_summary_table_shows_missing_figures_as_a_dash(rounds):
    row = {"method": "discrete", "tokens_per_s": 12.345, "spread": [10.0, 15.0], "ratio_median": 1.5, "ratio_spread": [1.25, 2.0],
           "warmup_seconds": 3.0, "peak_memory_mib": None}
    text = rounds.table([row], rounds.summary_columns("tokens_per_s", "tokens/s", 1, "vs static"))
    header, line = text.splitlines()
    assert header.split() == ["method", "tokens/s", "min-max", "vs", "static", "min-max", "warm-up", "s", "peak", "MiB"]
    assert line.split() == ["discrete", "12.3", "10.0-15.0", "1.50x", "1.25-2.00", "3.00", "-"]


def test_rollout_benchmark_writes_a_row_per_method(tmp_path):
    out = tmp_path / "rollout.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/rollout.py", "--model", "tiny-random:SmolLM2-135M-Instruct", "--new-tokens", "3",
         "--rounds", "2", "--methods", "hf_generate", "naive_loop", "dirichlet", "--json", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    rows = json.loads(out.read_text())["results"]
    assert [row["method"] for row in rows] == ["hf_generate", "naive_loop", "dirichlet"]
    assert all(row["tokens_per_s"] > 0 and row["peak_memory_mib"] > 0 and row["warmup_seconds"] > 0 for row in rows)
    assert all(len(row["rounds"]) == 2 and len(row["ratios"]) == 2 and row["baseline"] == "hf_generate" for row in rows)
    assert all(row["spread"][0] <= row["tokens_per_s"] <= row["spread"][1] for row in rows)
    assert rows[0]["ratio_median"] == 1.0 and "vs generate" in done.stdout


def test_grpo_step_benchmark_runs_rounds_of_processes(tmp_path):
    out = tmp_path / "grpo_step.json"
    subprocess.run(
        [sys.executable, "benchmarks/grpo_step.py", "--model", "tiny-random:SmolLM2-135M-Instruct", "--group-size", "2",
         "--new-tokens", "2", "--steps", "1", "--rounds", "2", "--methods", "discrete", "discrete+lora", "--lora-r", "2",
         "--json", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    row, adapted = json.loads(out.read_text())["results"]
    assert row["method"] == "discrete" and row["baseline"] == "discrete" and row["time_vs_trl"] is None  # no trl: the first method
    assert row["seconds_per_step"] > 0 and row["warmup_seconds"] > 0 and row["peak_memory_mib"] > 0
    assert len(row["rounds"]) == 2 and row["ratios"] == [1.0, 1.0] and [len(steps) for steps in row["steps"]] == [1, 1]
    assert adapted["method"] == "discrete+lora" and adapted["seconds_per_step"] > 0 and adapted["peak_memory_mib"] > 0


def test_the_benchmarks_offer_every_registered_rule(monkeypatch):
    """Each benchmark builds any rule of the registry by its name."""
    import importlib.util

    from motg_lightning.rules import REGISTRY

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # where the scripts import their helpers from
    scripts = {}
    for name in ("rollout", "grpo_step"):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
        scripts[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(scripts[name])
    methods = scripts["grpo_step"].METHODS
    assert {"trl", *REGISTRY} <= set(methods) and all(f"{name}+lora" in methods for name in ["trl", *REGISTRY])
    for name, entry in REGISTRY.items():
        assert type(scripts["rollout"].benchmark_rule(name)) is entry.rule


def test_run_summary_reads_a_training_log(tmp_path):
    from motg_lightning.lightning.cli import main

    main(["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=3"])
    log_dir = next(tmp_path.rglob("events.out.tfevents.*")).parent
    done = subprocess.run([sys.executable, "benchmarks/summarize_run.py", str(log_dir), "--window", "2", "--json", str(tmp_path / "s.json")],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reward"]["steps"] == 3 and "groups_with_variance" in summary
    assert "train wall time" in done.stdout
