"""What the side-by-side benchmarks share: each method measured in its own process (so a CPU's
peak memory is that method's own), optionally over interleaved rounds, and the results written as
JSON with the settings."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import torch
from rounds import rotated


def measure_each(script: str, methods: list[str], argv: list[str]) -> list[dict]:
    """Run ``script --method M argv`` for every method in turn; collect the JSON line each prints
    last. A method that fails is reported on stderr and left out."""
    results = []
    for method in methods:
        done = subprocess.run([sys.executable, script, "--method", method, *argv], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{method}: done", file=sys.stderr, flush=True)
    return results


def measure_rounds(script: str, methods: list[str], argv: list[str], rounds: int) -> list[dict[str, dict]]:
    """``measure_each`` ``rounds`` times, the order rotated each round (A B C, B C A, ...); per
    round, each method's row by its name (a method that failed that round has none)."""
    per_round = []
    for turn in range(rounds):
        print(f"round {turn + 1} of {rounds}", file=sys.stderr, flush=True)
        per_round.append({row["method"]: row for row in measure_each(script, rotated(methods, turn), argv)})
    return per_round


def write_results(path: Path, args: Namespace, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {name: value for name, value in vars(args).items() if name != "json"}
    path.write_text(json.dumps({"settings": settings, "results": results}, indent=2, default=str))


def peak_memory_mib(device: str) -> float:
    """This process's peak so far: allocated memory on CUDA (since the last reset of the peak
    statistics), resident set size on the CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_kind(device: str) -> str:
    return "cuda allocated" if device.startswith("cuda") else "process RSS"
