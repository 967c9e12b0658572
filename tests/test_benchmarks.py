"""The benchmark scripts keep running (figures in docs come from them); no timings are checked."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rollout_benchmark_writes_a_row_per_method(tmp_path):
    out = tmp_path / "rollout.json"
    subprocess.run(
        [sys.executable, "benchmarks/rollout.py", "--model", "tiny-random:SmolLM2-135M-Instruct", "--new-tokens", "3",
         "--methods", "hf_generate", "naive_loop", "dirichlet", "--json", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    rows = json.loads(out.read_text())["results"]
    assert [row["method"] for row in rows] == ["hf_generate", "naive_loop", "dirichlet"]
    assert all(row["tokens_per_s"] > 0 and row["peak_memory_mib"] > 0 for row in rows)


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
    assert scripts["grpo_step"].METHODS == ["trl", *REGISTRY]
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
