"""Summarise a training run from its TensorBoard log: start and end of the main curves.

    python benchmarks/summarize_run.py runs/default/mot_grpo/version_0 [--window 5] [--json out.json]

Prints, for the first and last ``window`` training steps, the mean reward, accuracy, format term,
fraction of groups with reward variance and completion length, the validation accuracies, and
the wall time between the first and last logged training step.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CURVES = {
    "reward": "train/reward",
    "accuracy": "train/accuracy",
    "format": "train/rewards/format/mean",
    "zero_variance_groups": "train/zero_variance_groups",
    "completion_length": "train/completion_length/mean",
    "rollout_tokens_per_s": "train/rollout_tokens_per_s",
    "rollout_seconds": "train/rollout_seconds",
    "update_seconds": "train/update_seconds",
}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(log_dir: Path, window: int) -> dict:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    summary: dict = {"log_dir": str(log_dir)}
    for name, tag in CURVES.items():
        if tag not in tags:
            continue
        values = [event.value for event in events.Scalars(tag)]
        summary[name] = {"steps": len(values), "start": statistics.mean(values[:window]), "end": statistics.mean(values[-window:])}
    if "zero_variance_groups" in summary:
        for key in ("start", "end"):
            summary.setdefault("groups_with_variance", {})[key] = 1 - summary["zero_variance_groups"][key]
    summary["validation"] = {
        tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in sorted(tags) if tag.startswith("val/")
    }
    steps = events.Scalars("train/reward") if "train/reward" in tags else []
    if len(steps) > 1:
        summary["train_wall_seconds"] = steps[-1].wall_time - steps[0].wall_time
        summary["seconds_per_step"] = summary["train_wall_seconds"] / (len(steps) - 1)
        gaps = [later.wall_time - earlier.wall_time for earlier, later in zip(steps, steps[1:])]
        summary["step_seconds"] = spread(gaps)
    for name in ("rollout_seconds", "update_seconds"):  # where a step's time goes
        if CURVES[name] in tags:
            summary[f"{name}_spread"] = spread([event.value for event in events.Scalars(CURVES[name])])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--window", type=int, default=5, help="steps averaged at the start and at the end")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    summary = summarise(args.log_dir, args.window)
    print(f"run: {summary['log_dir']}  (means over the first/last {args.window} steps)")
    print(f"{'metric':<24}{'start':>10}{'end':>10}{'steps':>8}")
    for name in [*CURVES, "groups_with_variance"]:
        if name in summary:
            row = summary[name]
            print(f"{name:<24}{row['start']:>10.3f}{row['end']:>10.3f}{row.get('steps', ''):>8}")
    for tag, points in summary["validation"].items():
        print(f"{tag:<40}" + "  ".join(f"step {step}: {value:.3f}" for step, value in points))
    if "train_wall_seconds" in summary:
        print(f"train wall time {summary['train_wall_seconds']:.0f} s, {summary['seconds_per_step']:.1f} s/step")
    for name in ("step_seconds", "rollout_seconds_spread", "update_seconds_spread"):
        if name in summary:
            row = summary[name]
            print(f"{name.removesuffix('_spread'):<16} mean {row['mean']:.1f} s, median {row['median']:.1f} s, "
                  f"min {row['min']:.1f} s, max {row['max']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
