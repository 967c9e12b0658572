"""Options a rule switched on the command line keeps from the rule it replaced.

Given ``--model.mixture=<class>`` alone, the config parser keeps every ``init_arg`` of the previous
rule (from a ``--config`` file) that the new class also takes: that is jsonargparse's design, so
that ``--model.mixture.k=3`` after a class switch does not reset the rest. A rule's own defaults
are its paper's, though, so a kept value that differs from them (``default.yaml``'s Dirichlet
``likelihood: representative`` carried into ``Sampled``, whose paper trains ``weighted``) is
reported before training, naming the option and the overlay that gives the documented rule.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

FIELD = "--model.mixture"


def switched_class(args: list[str]) -> tuple[str, int] | None:
    """The class path the command line gives ``model.mixture`` last, and the index after it;
    None when it gives none (a YAML mapping with its own ``init_args`` is not a bare switch)."""
    found = None
    for index, arg in enumerate(args):
        if arg.startswith(FIELD + "="):
            value, after = arg.split("=", 1)[1], index + 1
        elif arg == FIELD and index + 1 < len(args):
            value, after = args[index + 1], index + 2
        else:
            continue
        found = None if value.lstrip().startswith("{") else (value, after)
    return found


def given_after(args: list[str], start: int) -> set[str]:
    """Names of ``model.mixture`` options the command line sets after the switch."""
    names = set()
    for arg in args[start:]:
        if arg.startswith(FIELD + "."):
            names.add(arg[len(FIELD) + 1 :].split("=", 1)[0].removeprefix("init_args."))
    return names


def constructor_defaults(class_path: str) -> dict[str, Any]:
    module, name = class_path.rsplit(".", 1)
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    return {key: p.default for key, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def inherited_rule_options(args: list[str], class_path: str, init_args: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{option: (kept value, the class's default)}`` for the resolved rule ``class_path`` with
    ``init_args``, when the command line switched to it without setting those options."""
    switch = switched_class(args)
    if switch is None:
        return {}
    given = given_after(args, switch[1])
    defaults = constructor_defaults(class_path)
    return {
        name: (value, defaults[name]) for name, value in init_args.items()
        if name not in given and name in defaults and value != defaults[name]
    }


def describe(class_path: str, inherited: dict[str, tuple[Any, Any]]) -> str:
    """The warning for :func:`inherited_rule_options`' result."""
    kept = ", ".join(f"{name}={value!r} (its default: {default!r})" for name, (value, default) in inherited.items())
    flags = " ".join(f"--model.mixture.{name}={default}" for name, (_, default) in inherited.items())
    return (f"model.mixture={class_path} was set on the command line and keeps options set for the rule before it "
            f"(in a --config file): {kept}. "
            f"To train the rule as documented, use its overlay from configs/methods/ or add {flags}.")
