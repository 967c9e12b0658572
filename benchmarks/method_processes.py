"""What the side-by-side benchmarks share: each method measured in its own process (so a CPU's
peak memory is that method's own), and the results written as JSON with the settings."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path


def measure_each(script: str, methods: list[str], argv: list[str]) -> list[dict]:
    """Run ``script --method M argv`` for every method; collect the JSON line each prints last.
    A method that fails is reported on stderr and left out."""
    results = []
    for method in methods:
        done = subprocess.run([sys.executable, script, "--method", method, *argv], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{method}: done", file=sys.stderr, flush=True)
    return results


def write_results(path: Path, args: Namespace, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {name: value for name, value in vars(args).items() if name != "json"}
    path.write_text(json.dumps({"settings": settings, "results": results}, indent=2, default=str))
