"""The optimizer and learning-rate scheduler of a run, built from ``model.optimizer`` and
``model.lr_scheduler`` (the factories LightningCLI makes of them).

torch checks an optimizer's and a scheduler's arguments only when they are built, after the model
is loaded (a negative learning rate, a ``LinearLR`` start factor above 1); a value refused there is
reported naming the config field, like every setting refused at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

DEFAULT_LR = 1e-6  # AdamW's learning rate when no optimizer is configured


def configure_optimization(
    parameters: Iterable[Tensor],
    optimizer_factory: Callable[[Iterable[Tensor]], Optimizer] | None,
    scheduler_factory: Callable[[Optimizer], Any] | None,
) -> Optimizer | dict[str, Any]:
    """What ``configure_optimizers`` returns: the optimizer (default ``AdamW(lr=1e-6)``) and, when
    a scheduler is configured, the scheduler stepped once per optimizer step."""
    if optimizer_factory is None:
        optimizer = torch.optim.AdamW(parameters, lr=DEFAULT_LR)
    else:
        optimizer = _built("model.optimizer", optimizer_factory, parameters)
    if scheduler_factory is None:
        return optimizer
    scheduler = _built("model.lr_scheduler", scheduler_factory, optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _built(field: str, factory: Callable[[Any], Any], argument: Any) -> Any:
    try:
        return factory(argument)
    except ValueError as error:
        raise ValueError(f"{field}: {_class_name(factory)} refuses its arguments: {error}") from error


def _class_name(factory: Callable[..., Any]) -> str:
    """The class a factory builds (LightningCLI's factories are partials holding it), else its name."""
    built = next((arg for arg in getattr(factory, "args", ()) if isinstance(arg, type)), factory)
    return getattr(built, "__name__", repr(built))
