"""Collectives that keep processes in step: gathering rows and objects, agreeing on a maximum,
and stopping a rollout only when every rank is done. Each is a no-op in a single process."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def finished_everywhere(finished: Tensor) -> bool:
    """Whether every sequence on every rank has stopped (one small all-reduce when distributed)."""
    done = finished.all()
    if world_size() > 1:
        done = done.to(torch.int32)
        dist.all_reduce(done, op=dist.ReduceOp.MIN)
    return bool(done)


def gather_rows(values: Tensor) -> Tensor:
    """Every rank's 1-D ``values`` (of any length) concatenated in rank order, for statistics
    over the whole batch such as TRL's (``values`` itself when not distributed). With NCCL the
    values must be on the rank's GPU."""
    if world_size() == 1:
        return values
    count = torch.tensor([values.numel()], dtype=torch.int64, device=values.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    padded = values.new_zeros(int(max(counts)))
    padded[: values.numel()] = values
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, counts)])


def gather_objects(value: Any) -> list[Any]:
    """Every rank's picklable ``value``, in rank order (``[value]`` when not distributed)."""
    if world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def max_over_ranks(value: int, device: torch.device | None = None) -> int:
    """The largest ``value`` of any rank (``value`` itself when not distributed)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor(value, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


def mean_over_ranks(value: Tensor) -> Tensor:
    """The mean of every rank's ``value`` (``value`` itself when not distributed)."""
    if world_size() == 1:
        return value
    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size()
