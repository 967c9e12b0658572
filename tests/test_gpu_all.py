"""benchmarks/gpu_all.sh runs every stage on the CPU with --dry-run, so the script is known to work
before it meets a GPU (no timings are checked)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_goes_through_every_stage_and_writes_its_tables(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu_all.sh", str(tmp_path), "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "BUDGET": "800"})
    summary = (tmp_path / "summary.txt").read_text()
    for stage in ("rollout", "grpo_step", "distributed", "paper"):
        assert f"{stage}: exit 0," in summary, f"{stage} failed:\n{summary}\n{(tmp_path / f'{stage}.txt').read_text()[-3000:]}"
    assert "total" in summary and done.returncode == 0
    rollout = (tmp_path / "rollout.txt").read_text()
    assert "hf_generate_static" in rollout and "dirichlet" in rollout
    assert (tmp_path / "rollout.json").exists() and (tmp_path / "grpo_step.json").exists()
    distributed = (tmp_path / "distributed.txt").read_text()
    assert "ddp validate --ckpt_path" in distributed and "fsdp2 validate --ckpt_path" in distributed
    paper = (tmp_path / "paper.txt").read_text()
    assert "step 2:" in paper and "rollout" in paper and "peak memory" in paper
