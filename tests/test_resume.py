"""Nothing lost: a run killed with SIGKILL in the middle of a step resumes from its last
checkpoint and goes on exactly as the uninterrupted run (same prompts, same losses, same weights),
also when validation rolls out at the checkpoint step, as the default config does."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ddp_probe import probe_environment, read_ranks

ROOT = Path(__file__).resolve().parents[1]


def _command(directory: Path, *extra: str) -> list[str]:
    return [
        # configs/smoke.yaml validates every 2 steps (one batch): at the step-2 checkpoint too
        sys.executable, "main.py", "fit", "--config", "configs/smoke.yaml", "--trainer.max_steps=4",
        "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={directory}", "--trainer.logger=false",
        "--trainer.callbacks+=ddp_probe.RankProbe",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={directory / 'ckpt'}",
        "--trainer.callbacks.every_n_train_steps=2", "--trainer.callbacks.save_top_k=-1", *extra,
    ]


def _steps(directory: Path) -> list[dict]:
    return read_ranks(directory, 1)[0]["steps"]


def test_killed_run_resumes_with_the_same_data_and_losses(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for directory in (whole, killed):
        directory.mkdir()
    done = subprocess.run(_command(whole), cwd=ROOT, env=probe_environment(whole), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    process = subprocess.Popen(
        [*_command(killed), "--trainer.callbacks+=ddp_probe.HangAtStep"], cwd=ROOT,
        env=probe_environment(killed, MOTG_HANG_AT_STEP="3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (killed / "hanging").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before reaching step 3"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)  # in the middle of step 3, after the step-2 checkpoint
    process.wait()
    checkpoints = sorted(path.name for path in (killed / "ckpt").iterdir())
    assert checkpoints == ["epoch=0-step=2.ckpt"], "one whole checkpoint, no partial file"

    resumed = subprocess.run([*_command(killed), f"--ckpt_path={killed / 'ckpt' / 'epoch=0-step=2.ckpt'}"], cwd=ROOT,
                             env=probe_environment(killed), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted, after = _steps(whole)[2:], _steps(killed)
    assert [s["step"] for s in after] == [3, 4]
    assert [s["questions"] for s in after] == [s["questions"] for s in uninterrupted], "the same prompts in the same order"
    assert all(s["loss"] != 0 for s in uninterrupted), "the KL term makes every later loss depend on the rollouts"
    for mine, theirs in zip(after, uninterrupted):
        assert mine["rng"] == theirs["rng"], "the rollouts drew the same random numbers"
        assert mine["loss"] == theirs["loss"]
        assert mine["local_reward"] == theirs["local_reward"]
    assert read_ranks(killed, 1)[0]["weights"] == read_ranks(whole, 1)[0]["weights"], "the same weights at the end"


def test_a_checkpoint_write_cut_short_leaves_no_partial_file(tmp_path, monkeypatch):
    """Lightning writes checkpoints through an fsspec transaction: a temporary file moved into
    place only once complete. A failure in the middle of the write leaves the old file as it was."""
    import fsspec.implementations.local as local
    import lightning as L
    import torch

    from motg_lightning.lightning.module import MoTGRPOModule
    from motg_lightning.lightning.options import GRPOOptions
    from motg_lightning.models import TINY_MODEL

    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2))
    module.configure_model()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"previous checkpoint")

    def write_half_then_fail(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(local.LocalFileOpener, "write", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(target)
    monkeypatch.undo()
    assert target.read_bytes() == b"previous checkpoint"
    assert [path.name for path in tmp_path.iterdir()] == ["model.ckpt"], "no temporary file left behind"
    trainer.save_checkpoint(target)
    assert "state_dict" in torch.load(target, weights_only=False)
