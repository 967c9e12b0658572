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
from torch import Tensor, nn
from torch.optim import Optimizer

from ..rules import MixtureRule
from ..rules.parameters import owns_parameters

DEFAULT_LR = 1e-6  # AdamW's learning rate when no optimizer is configured


def parameter_groups(policy: nn.Module, rule: MixtureRule) -> list[dict[str, Any]]:
    """The policy's trainable parameters in optimizer groups: one of the model's own, and one per
    learning-rate scale of the parameters the rule trains (HRPO's gate), each with its ``lr_scale``."""
    scales: dict[float, list[Tensor]] = {1.0: []}  # the model's own first: its learning rate is the one logged
    for name, parameter in policy.named_parameters():
        if parameter.requires_grad:
            scale = rule.learning_rate_scale(name) if owns_parameters(name) else 1.0
            scales.setdefault(scale, []).append(parameter)
    return [{"params": parameters, "lr_scale": scale} for scale, parameters in scales.items() if parameters]


def configure_optimization(
    parameters: Iterable[Tensor] | list[dict[str, Any]],
    optimizer_factory: Callable[[Iterable[Tensor]], Optimizer] | None,
    scheduler_factory: Callable[[Optimizer], Any] | None,
) -> Optimizer | dict[str, Any]:
    """What ``configure_optimizers`` returns: the optimizer (default ``AdamW(lr=1e-6)``) and, when
    a scheduler is configured, the scheduler stepped once per optimizer step. A parameter group
    with an ``lr_scale`` (:func:`parameter_groups`) gets the configured learning rate times it."""
    if optimizer_factory is None:
        optimizer = torch.optim.AdamW(parameters, lr=DEFAULT_LR)
    else:
        optimizer = _built("model.optimizer", optimizer_factory, parameters)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
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
