"""Scorers of a question file's answers: the built-in ones, and a user's function named by its import path.

A scorer is called as ``scorer(answer, entry)``: ``answer`` is the text of the completion's last
``<answer>…</answer>`` (None when there is none) and ``entry`` the item (``question``, ``answer``,
``metadata``); it returns a score in [0, 1], 1 meaning correct. ``exact`` is Reasoning-Gym's
default scorer, run by :class:`~motg_lightning.tasks.question_file.QuestionFileDataset` itself.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from reasoning_gym.utils import compute_decimal_reward

#: ``scorer(answer, entry) -> float``
Scorer = Callable[[str | None, dict[str, Any]], float]

EXACT = "exact"


def number(answer: str | None, entry: dict[str, Any]) -> float:
    """Reasoning-Gym's numeric scorer: 1 when both parse to the same decimal, tolerating sign,
    leading zeros, trailing decimals and thousands commas (`+01,000.00` is `1000`); otherwise
    partial credit `len(oracle) / len(answer)` when the answer contains the oracle."""
    return compute_decimal_reward(answer, str(entry["answer"]))


BUILT_IN: dict[str, Scorer] = {"number": number}


@functools.cache
def load_scorer(name: str) -> Scorer:
    """The scorer ``name`` names: a built-in one (``number``) or an import path, either
    ``package.module:function`` or ``package.module.function``. Raises a ``ValueError`` naming
    the ``scorer`` option and the fix when it cannot be imported or called as ``(answer, entry)``."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    where = f"scorer={name!r}"
    module_name, _, attribute = name.rpartition(":" if ":" in name else ".")
    if not module_name or not attribute:
        raise ValueError(f"{where}: neither a built-in scorer ({', '.join([EXACT, *BUILT_IN])}) nor an import "
                         "path such as my_package.scoring:score.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{where}: cannot import module {module_name!r} ({error}); put it on the Python path "
                         "(an installed package, PYTHONPATH or the folder of main.py).") from None
    function = getattr(module, attribute, None)
    if not callable(function):  # a setting's error, a ValueError as every other one
        raise ValueError(  # noqa: TRY004
            f"{where}: module {module_name!r} has no function {attribute!r}.")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature; they are called as they are
        return function
    try:
        signature.bind(None, {})
    except TypeError as error:
        raise ValueError(f"{where}: {error}; a scorer is called as function(answer, entry) and returns a float.") from None
    return function
