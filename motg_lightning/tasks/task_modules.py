"""``data.task_modules``: the user's Python modules that register Reasoning-Gym datasets.

A module that calls ``reasoning_gym.register_dataset(name, dataset_class, config_class)`` when it
is imported makes ``name`` a task the data module accepts; naming the module in
``data.task_modules`` imports it before the tasks are checked, so a YAML file alone can train on
it (and each process of a multi-process run, which builds its own data module, imports it too).
"""

from __future__ import annotations

import importlib


def import_task_modules(names: list[str]) -> None:
    """Import each module of ``names``; raise a ``ValueError`` naming ``data.task_modules`` and
    the fix for one that cannot be imported."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ValueError(
                f"data.task_modules: cannot import {name!r} ({error}); give the import name of a module that calls "
                "reasoning_gym.register_dataset, on the Python path (an installed package, PYTHONPATH or the folder "
                "of main.py)."
            ) from None
