"""Run every method overlay of ``configs/methods/`` for a few steps on top of a base config and
tabulate what each did: the check that each method runs as a user would run it.

    python benchmarks/method_configs.py                       # default.yaml (embedded SmolLM2), 3 steps each
    python benchmarks/method_configs.py --steps 2 --base configs/smoke.yaml --methods gaussian dapo
    python benchmarks/method_configs.py --methods dirichlet_density --flags=--model.grpo.num_iterations=2 \
        --flags=--model.grpo.importance_sampling_level=sequence     # the same flags on every run

Each run is ``python main.py fit --config <base> --config configs/methods/<name>.yaml`` with
``max_steps`` set, validation and checkpoints off and TensorBoard logs under ``--out``. Prints a
Markdown table (mean training reward, accuracy and clip fraction over the steps, whether every
loss and gradient norm was finite, seconds per step)
and writes it with the per-run summaries as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]


def run(base: Path, method: Path, steps: int, out: Path, flags: list[str] = ()) -> dict:
    command = [
        sys.executable, str(ROOT / "main.py"), "fit", "--config", str(base), "--config", str(method), *flags,
        f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=[]", "--trainer.logger.class_path=lightning.pytorch.loggers.TensorBoardLogger",
        f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={method.stem}",
        "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    row: dict = {"method": method.stem, "returncode": done.returncode, "wall_seconds": time.perf_counter() - start}
    if done.returncode != 0:
        row["error"] = done.stderr[-1500:]
        return row
    events = EventAccumulator(str(out / method.stem / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    tags = ("train/reward", "train/accuracy", "train/loss", "train/grad_norm", "train/clip_fraction")
    values = {tag: [e.value for e in events.Scalars(tag)] for tag in tags}
    row.update({name.split("/")[1]: statistics.mean(points) for name, points in values.items() if points})
    row["steps"] = len(values["train/loss"])
    row["finite"] = all(math.isfinite(v) for v in values["train/loss"] + values["train/grad_norm"])
    rewards = events.Scalars("train/reward")
    if len(rewards) > 1:
        row["seconds_per_step"] = (rewards[-1].wall_time - rewards[0].wall_time) / (len(rewards) - 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", nargs="*", help="overlay names (default: all in configs/methods)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "methods")
    parser.add_argument("--flags", action="append", default=[], help="a command-line flag added to every run (repeatable)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "method_configs.json")
    args = parser.parse_args()
    overlays = sorted((ROOT / "configs" / "methods").glob("*.yaml"))
    if args.methods:
        overlays = [path for path in overlays if path.stem in args.methods]
    rows = []
    for overlay in overlays:
        rows.append(run(args.base, overlay, args.steps, args.out.resolve(), args.flags))
        print(json.dumps(rows[-1]), file=sys.stderr)
    lines = [f"base `{args.base.name}`, {args.steps} steps each{', flags ' + ' '.join(args.flags) if args.flags else ''}", "",
             "| method | steps | reward | accuracy | clip fraction | loss and gradients finite | s/step |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if row["returncode"] != 0:
            lines.append(f"| {row['method']} | failed | | | | | |")
            continue
        lines.append(f"| {row['method']} | {row['steps']} | {row.get('reward', float('nan')):.3f} | {row.get('accuracy', float('nan')):.3f} "
                     f"| {row.get('clip_fraction', float('nan')):.4f} "
                     f"| {'yes' if row['finite'] else 'NO'} | {row.get('seconds_per_step', float('nan')):.1f} |")
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"base": str(args.base), "steps": args.steps, "runs": rows}, indent=2))
    if any(row["returncode"] != 0 for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
