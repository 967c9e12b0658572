"""Soak test: a few hundred training steps on the tiny model with flat memory.

    python benchmarks/soak.py --steps 400

Trains ``configs/smoke.yaml``'s tiny random model through the CLI for ``--steps`` steps with
TensorBoard logging, sample completions every step, exploration measures and a validation every
50 steps, sampling the process's resident memory after every step. Memory must not grow with the
steps (from logging, caches or stored rollouts): the script fits a line to the RSS of the second
half and fails if it grows by more than ``--max-growth-mib`` per 100 steps. Prints a summary and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import lightning as L
import psutil

from motg_lightning.lightning.cli import MoTGRPOCLI
from motg_lightning.lightning.data import ReasoningGymDataModule
from motg_lightning.lightning.module import MoTGRPOModule

ROOT = Path(__file__).resolve().parents[1]


class MemorySampler(L.Callback):
    def __init__(self):
        self.rss_mib: list[float] = []
        self.process = psutil.Process()

    def on_train_batch_end(self, *_):
        self.rss_mib.append(self.process.memory_info().rss / 2**20)


def slope_per_100_steps(values: list[float]) -> float:
    count = len(values)
    mean_x, mean_y = (count - 1) / 2, sum(values) / count
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    variance = sum((x - mean_x) ** 2 for x in range(count))
    return 100 * covariance / variance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--max-growth-mib", type=float, default=5.0, help="allowed RSS growth per 100 steps (second half)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args()
    sampler = MemorySampler()
    with tempfile.TemporaryDirectory() as directory:
        cli = MoTGRPOCLI(MoTGRPOModule, ReasoningGymDataModule, run=False, save_config_callback=None, args=[
            "--config", str(ROOT / "configs" / "smoke.yaml"), f"--trainer.max_steps={args.steps}",
            f"--trainer.default_root_dir={directory}", "--trainer.val_check_interval=50", "--trainer.check_val_every_n_epoch=null",
            "--trainer.logger.class_path=lightning.pytorch.loggers.TensorBoardLogger", f"--trainer.logger.init_args.save_dir={directory}",
            "--model.logging.log_completions_every_n_steps=1", "--model.logging.exploration_every_n_steps=5", "--data.train_size=64",
        ])
        cli.trainer.callbacks.append(sampler)
        cli.trainer.fit(cli.model, cli.datamodule)
    rss = sampler.rss_mib
    half = rss[len(rss) // 2 :]
    result = {
        "steps": len(rss), "rss_mib_first": rss[0], "rss_mib_middle": half[0], "rss_mib_last": rss[-1], "rss_mib_max": max(rss),
        "second_half_growth_mib_per_100_steps": slope_per_100_steps(half), "limit_mib_per_100_steps": args.max_growth_mib,
    }
    result["flat"] = result["second_half_growth_mib_per_100_steps"] <= args.max_growth_mib
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    for name, value in result.items():
        print(f"{name:<36}{value:.2f}" if isinstance(value, float) else f"{name:<36}{value}")
    sys.exit(0 if result["flat"] else 1)


if __name__ == "__main__":
    main()
