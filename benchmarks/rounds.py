"""Summaries of a benchmark run in rounds, shared by ``rollout.py`` and ``grpo_step.py``.

A run measures every method once per round, the methods interleaved (A B C, then B C A, ...), so
slow drift of a shared machine (other work, clocks, caches) falls on every method alike. Per method
it reports the median figure over the rounds and the spread as the minimum and maximum (with the 2
to 5 rounds we can afford an interquartile range would be the extremes anyway), and the ratio to a
baseline computed round by round (each round's figure over the baseline's in the same round), so
that a round on a busy machine slows both sides of a ratio instead of one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence


def rotated(methods: Sequence[str], shift: int) -> list[str]:
    """The order of round ``shift``: ``methods`` rotated left, so each method takes each place in turn."""
    if not methods:
        return []
    shift %= len(methods)
    return [*methods[shift:], *methods[:shift]]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> list[float] | None:
    """``[min, max]`` of ``values``, or None when there are none."""
    return [min(values), max(values)] if values else None


def round_ratios(per_round: Sequence[dict[str, float]], method: str, baseline: str) -> list[float]:
    """``method``'s figure over ``baseline``'s, round by round, for the rounds where both have one."""
    return [figures[method] / figures[baseline] for figures in per_round if method in figures and baseline in figures]


def summarize(per_round: Sequence[dict[str, float]], methods: Sequence[str], baseline: str | None) -> dict[str, dict]:
    """For each of ``methods`` with a figure in some round: its figure per round (None where it has
    none), their median and spread, and the per-round ratios to ``baseline`` with their median and
    spread (None without a baseline)."""
    summary = {}
    for method in methods:
        rounds = [figures.get(method) for figures in per_round]
        present = [value for value in rounds if value is not None]
        if not present:
            continue
        ratios = round_ratios(per_round, method, baseline) if baseline else []
        summary[method] = {"rounds": rounds, "median": median(present), "spread": spread(present),
                           "ratios": ratios, "ratio_median": median(ratios), "ratio_spread": spread(ratios)}
    return summary


def first_present(candidates: Sequence[str], present: Sequence[str]) -> str | None:
    """The first of ``candidates`` that is in ``present``."""
    return next((name for name in candidates if name in present), None)


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def interval(values: Sequence[float] | None, digits: int) -> str:
    return "-" if values is None else f"{values[0]:.{digits}f}-{values[1]:.{digits}f}"


Column = tuple[str, int, Callable[[dict], str]]


def summary_columns(figure: str, label: str, digits: int, ratio_label: str) -> list[Column]:
    """The columns both benchmarks print for rows that hold ``figure`` (the median), ``spread``,
    ``ratio_median``, ``ratio_spread``, ``warmup_seconds`` and ``peak_memory_mib``."""
    return [
        ("method", -20, lambda row: row["method"]),
        (label, 10, lambda row: number(row[figure], digits)),
        ("min-max", 16, lambda row: interval(row["spread"], digits)),
        (ratio_label, 11, lambda row: number(row["ratio_median"], 2) + ("x" if row["ratio_median"] is not None else "")),
        ("min-max", 12, lambda row: interval(row["ratio_spread"], 2)),
        ("warm-up s", 11, lambda row: number(row["warmup_seconds"], 2)),
        ("peak MiB", 10, lambda row: number(row["peak_memory_mib"], 0)),
    ]


def table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """``rows`` as text, one line a row; a column's width is negative to align it left."""
    def line(cells):
        return "".join(f"{cell:<{-width}}" if width < 0 else f"{cell:>{width}}" for cell, (_, width, _) in zip(cells, columns))

    return "\n".join([line([name for name, _, _ in columns]), *(line([show(row) for _, _, show in columns]) for row in rows)])
