"""The experiment runner on the tiny model: runs, then writes the table and the plots."""

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_runner_writes_tables_and_plots(tmp_path):
    command = [sys.executable, "benchmarks/experiments.py", "configs/experiments/tiny.yaml", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    arms = {row["arm"] for row in rows}
    assert arms == {"discrete", "dirichlet", "dirichlet_more_tokens"}
    assert all(row["seeds"] == "2" for row in rows)
    lengths = {row["arm"]: float(row["mean"]) for row in rows if row["metric"] == "val/completion_length"}
    assert lengths["dirichlet_more_tokens"] > lengths["dirichlet"], "an arm's own options reach its runs"
    table = (tmp_path / "results.md").read_text()
    assert "| val/accuracy/basic_arithmetic |" in table and "before training" in table
    for plot in ("learning_curves.png", "entropy_along_reasoning.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    rerun = subprocess.run([*command, "--report-only"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "training" not in rerun.stderr, "finished runs are not repeated"
