"""Train the same tasks and seeds with several rules, then tabulate and plot the results.

    python benchmarks/experiments.py configs/experiments/small.yaml
    python benchmarks/experiments.py configs/experiments/small.yaml --report-only   # tables and plots again

The experiment file names a base config, the rules (each a ``configs/methods`` overlay), the
seeds, extra command-line options for every run, and optional extra *arms* (a rule with other
options, e.g. the paper's efficiency comparison: a mixture rule with half the group size). Every
(arm, seed) is one ``python main.py fit`` with its own TensorBoard log under ``out``; a finished
run is not repeated. Then it writes, into ``out``:

* ``results.csv`` and ``results.md``: per arm and metric (final held-out metrics per task and
  overall, training reward over the last steps), the mean over seeds and its 95 % confidence
  interval (Student's t), beside the untrained model's held-out metrics (one ``validate``);
* ``learning_curves.png``: training reward per step, mean over seeds with its band;
* ``entropy_along_reasoning.png``: next-token entropy of thinking steps by step bucket.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from scipy import stats  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def arms(spec: dict) -> dict[str, list[str]]:
    """Each arm's name and its extra ``main.py`` arguments."""
    result = {rule: ["--config", str(ROOT / overlay)] for rule, overlay in spec["rules"].items()}
    for name, arm in (spec.get("arms") or {}).items():
        result[name] = ["--config", str(ROOT / spec["rules"][arm["rule"]]), *arm.get("args", [])]
    return result


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed_{seed}"


def train(spec: dict, out: Path, arm: str, arguments: list[str], seed: int) -> None:
    directory = run_dir(out, arm, seed)
    if (directory / "done").exists():
        return
    command = [
        sys.executable, str(ROOT / "main.py"), "fit", "--config", str(ROOT / spec["base"]), *arguments,
        f"--seed_everything={seed}", *spec.get("args", []), "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false",
        "--trainer.logger.class_path=lightning.pytorch.loggers.TensorBoardLogger",
        f"--trainer.logger.init_args.save_dir={directory}", "--trainer.logger.init_args.name=log",
        "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
    ]
    directory.mkdir(parents=True, exist_ok=True)
    print(f"[{arm} seed {seed}] training", file=sys.stderr, flush=True)
    with open(directory / "output.txt", "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{arm} seed {seed} failed; see {directory / 'output.txt'}")
    (directory / "done").write_text(" ".join(command))


def validate_before_training(spec: dict, out: Path) -> None:
    """Held-out metrics of the untrained model (the base config's evaluation settings), once."""
    directory = out / "runs" / "before_training"
    if (directory / "done").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, str(ROOT / "main.py"), "validate", "--config", str(ROOT / spec["base"]), *spec.get("args", []),
        "--trainer.callbacks=[]", "--trainer.logger.class_path=lightning.pytorch.loggers.TensorBoardLogger",
        f"--trainer.logger.init_args.save_dir={directory}", "--trainer.logger.init_args.name=log",
        "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
    ]
    print("[before training] validating", file=sys.stderr, flush=True)
    with open(directory / "output.txt", "w") as log:
        if subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"validation before training failed; see {directory / 'output.txt'}")
    (directory / "done").write_text(" ".join(command))


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(directory / "log" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def summary_metrics(series: dict[str, list[tuple[int, float]]], last: int) -> dict[str, float]:
    """Final held-out metrics and the training reward/accuracy over the ``last`` steps of one run."""
    values = {tag: points[-1][1] for tag, points in series.items() if tag.startswith("val/")}
    for tag in ("train/reward", "train/accuracy"):
        if tag in series:
            values[f"{tag} (last {last})"] = statistics.mean(v for _, v in series[tag][-last:])
    return values


def confidence(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (0 for a single value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def report(spec: dict, out: Path, names: list[str]) -> None:
    seeds, last = spec["seeds"], spec.get("last_steps", 5)
    runs = {arm: {seed: scalars(run_dir(out, arm, seed)) for seed in seeds} for arm in names}
    rows = []
    for arm in names:
        per_seed = [summary_metrics(runs[arm][seed], last) for seed in seeds]
        for metric in sorted(set().union(*per_seed)):
            values = [s[metric] for s in per_seed if metric in s]
            mean, half = confidence(values)
            rows.append({"arm": arm, "metric": metric, "mean": mean, "ci95": half, "seeds": len(values),
                         "values": " ".join(f"{v:.4f}" for v in values)})
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metrics = sorted({row["metric"] for row in rows})
    before = {}
    if (out / "runs" / "before_training" / "done").exists():
        before = {tag: points[-1][1] for tag, points in scalars(out / "runs" / "before_training").items()}
    table = ["| metric | before training | " + " | ".join(names) + " |", "| --- | --- |" + " --- |" * len(names)]
    for metric in metrics:
        cells = [f"{before[metric]:.3f}" if metric in before else ""]
        for arm in names:
            row = next((r for r in rows if r["arm"] == arm and r["metric"] == metric), None)
            cells.append(f"{row['mean']:.3f} ± {row['ci95']:.3f}" if row else "")
        table.append(f"| {metric} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text(f"Mean over seeds {seeds} ± 95 % confidence half-width (Student's t).\n\n" + "\n".join(table) + "\n")
    plot_curves(runs, names, out / "learning_curves.png")
    plot_entropy(runs, names, out / "entropy_along_reasoning.png")
    print("\n".join(table))


def _mean_band(series_per_seed: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float]]:
    steps = sorted(set.intersection(*[{s for s, _ in series} for series in series_per_seed]))
    means, halves = [], []
    for step in steps:
        mean, half = confidence([dict(series)[step] for series in series_per_seed])
        means.append(mean)
        halves.append(half)
    return steps, means, halves


def plot_curves(runs: dict, names: list[str], path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, tag in zip(axes, ("train/reward", "train/accuracy")):
        for arm in names:
            series = [runs[arm][seed][tag] for seed in runs[arm] if tag in runs[arm][seed]]
            if not series:
                continue
            steps, means, halves = _mean_band(series)
            axis.plot(steps, means, label=arm)
            axis.fill_between(steps, [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)], alpha=0.2)
        axis.set_xlabel("training step")
        axis.set_title(f"{tag} (mean over seeds, 95 % band)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_entropy(runs: dict, names: list[str], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for arm in names:
        buckets = []
        for seed_runs in runs[arm].values():
            tags = sorted((t for t in seed_runs if t.startswith("explore/entropy_by_step/")), key=lambda t: int(t.rsplit("/", 1)[1]))
            buckets.append([statistics.mean(v for _, v in seed_runs[t]) for t in tags])
        width = min(len(b) for b in buckets) if buckets else 0
        if width:
            axis.plot(range(width), [statistics.mean(b[i] for b in buckets) for i in range(width)], marker="o", label=arm)
    axis.set_xlabel("thinking-step bucket (start → end of the reasoning)")
    axis.set_ylabel("next-token entropy (nats)")
    axis.set_title("entropy along the reasoning (mean over logged steps and seeds)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path, help="experiment YAML (see configs/experiments/)")
    parser.add_argument("--out", type=Path, help="default: the experiment file's 'out'")
    parser.add_argument("--report-only", action="store_true", help="only rebuild tables and plots from finished runs")
    args = parser.parse_args()
    spec = yaml.safe_load(args.experiment.read_text())
    out = (args.out or ROOT / spec["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(spec, indent=2))
    names = list(arms(spec))
    if not args.report_only:
        validate_before_training(spec, out)
        for seed in spec["seeds"]:
            for arm, arguments in arms(spec).items():
                train(spec, out, arm, arguments, seed)
    report(spec, out, names)


if __name__ == "__main__":
    main()
