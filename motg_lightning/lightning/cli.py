"""``LightningCLI`` entry point: ``python main.py fit --config configs/default.yaml``.

:func:`main` builds and runs the CLI and raises what goes wrong (for tests and Python callers);
:func:`command_line`, which ``main.py`` runs, ends a setting refused with its field named the way
an argparse error ends: ``error: <message>`` as the last line and exit status 2, no traceback.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import FSDPStrategy

from .data import ReasoningGymDataModule
from .module import MoTGRPOModule
from .options import MOVED_KEYS
from .prediction_writer import PredictionsJsonl
from .rule_switch import describe, inherited_rule_options

FIELD_PREFIXES = ("model.", "data.", "trainer.")
#: settings the CLI copies into another (source → target); the target is not a flag of its own, so
#: an error naming it names the source instead
LINKED_FIELDS = {"model.model_name_or_path": "data.tokenizer"}


class MoTGRPOCLI(LightningCLI):
    """The CLI of this library: the data module's tokenizer follows the model, and a trainer that
    asks for GPUs the machine lacks (a GPU accelerator, or FSDP1, which Lightning runs on CUDA
    only) is refused before any model is loaded, with the setting to change. ``predict`` writes its
    rows with a :class:`PredictionsJsonl` (``predictions.jsonl`` in ``trainer.default_root_dir``)
    unless ``trainer.callbacks`` holds a prediction writer of its own."""

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        configured = config.get("callbacks") or []
        writers = [c for c in [*(configured if isinstance(configured, list) else [configured]), *callbacks]
                   if isinstance(c, BasePredictionWriter)]
        if self.subcommand == "predict" and not writers:
            callbacks = [*callbacks, PredictionsJsonl()]
        return super()._instantiate_trainer(config, callbacks)

    def add_arguments_to_parser(self, parser) -> None:
        for source, target in LINKED_FIELDS.items():
            parser.link_arguments(source, target)

    def parse_arguments(self, parser, args) -> None:
        self.command_line_args = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        refuse_moved_keys(args if isinstance(args, dict) else self.command_line_args)
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._warn_about_inherited_rule_options(config["model"]["mixture"])
        accelerator, strategy = config["trainer"]["accelerator"], config["trainer"]["strategy"]
        if torch.cuda.is_available():
            return
        if accelerator in ("gpu", "cuda"):
            raise ValueError(
                f"trainer.accelerator={accelerator}: this machine has no CUDA GPU; use trainer.accelerator=cpu "
                "(or auto), or run on a GPU machine."
            )
        if _is_fsdp1(strategy):
            raise ValueError(
                f"trainer.strategy={_strategy_name(strategy)}: FSDP1 (Lightning's FSDPStrategy) runs on CUDA GPUs only and "
                "this machine has none; use trainer.strategy=ddp, or FSDP2 with --config configs/strategy/fsdp2.yaml."
            )

    def _warn_about_inherited_rule_options(self, mixture: Any) -> None:
        if mixture is None or not hasattr(mixture, "class_path"):
            return
        init_args = mixture.init_args.as_dict() if hasattr(mixture.init_args, "as_dict") else dict(mixture.init_args or {})
        inherited = inherited_rule_options(self.command_line_args, mixture.class_path, init_args)
        if inherited:
            warnings.warn(describe(mixture.class_path, inherited), UserWarning, stacklevel=2)

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but a constructor's own error is raised as it is: jsonargparse wraps
        an error of a ``Union``-typed argument (``model.mixture``, ``model.reward``) in a list of
        the union's members, which buries the message naming the field."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            named = _naming_a_field(error)
            if named is error:
                raise
            raise named from None


def refuse_moved_keys(args: list[str] | dict[str, Any]) -> None:
    """Refuse, naming each key's new place, a flat ``model`` key of the layout before the settings
    were grouped (``model.beta`` is now ``model.grpo.beta``), given as a flag, in a ``--config``
    file or in a config dict."""
    found: dict[str, str] = {}  # old key -> where it was given
    if isinstance(args, dict):
        found.update(dict.fromkeys(_moved_in(args), "the config"))
        args = []
    for index, arg in enumerate(args):
        key = arg[len("--model."):].split("=", 1)[0] if arg.startswith("--model.") else None
        if key in MOVED_KEYS:
            found.setdefault(key, "the command line")
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else args[index + 1] if arg == "--config" and index + 1 < len(args) else None
        if path is not None and Path(path).is_file():
            found.update({key: path for key in _moved_in(yaml.safe_load(Path(path).read_text()) or {}) if key not in found})
    if found:
        by_source = {source: [key for key, where in found.items() if where == source] for source in found.values()}
        moves = "; ".join(
            f"{', '.join(f'model.{key}' for key in keys)} (in {source}) {'is' if len(keys) == 1 else 'are'} now "
            + ", ".join(f"model.{MOVED_KEYS[key]}" for key in keys) for source, keys in by_source.items()
        )
        raise ValueError(f"{moves}. The module's settings are grouped under model.rollout, model.grpo, model.memory, "
                         "model.evaluation and model.logging (configs/default.yaml shows the layout).")


def _moved_in(config: dict[str, Any]) -> list[str]:
    model = config.get("model") if isinstance(config, dict) else None
    init_args = model.get("init_args", model) if isinstance(model, dict) else {}
    return [key for key in (init_args or {}) if key in MOVED_KEYS]


def _naming_a_field(error: BaseException) -> BaseException:
    """The outermost error of ``error``'s chain whose message starts with a config field
    (``model.…``, ``data.…``, ``trainer.…``); ``error`` itself when none does."""
    current: BaseException | None = error
    while current is not None:
        if str(current).startswith(FIELD_PREFIXES):
            return current
        current = current.__cause__ if current.__cause__ is not None else (
            None if current.__suppress_context__ else current.__context__)
    return error


def _strategy_name(strategy: Any) -> str:
    """The strategy as configured: a registry name such as ``fsdp``, or a class path."""
    return strategy if isinstance(strategy, str) else str(getattr(strategy, "class_path", strategy))


def _is_fsdp1(strategy: Any) -> bool:
    name = _strategy_name(strategy)
    return name.startswith("fsdp") or name.rsplit(".", 1)[-1] == "FSDPStrategy" or isinstance(strategy, FSDPStrategy)


def _named_as_set(error: ValueError) -> ValueError:
    """``error`` with a linked target field at the start of its message (``data.tokenizer=…``)
    renamed to the source field the user set; ``error`` itself otherwise."""
    message = str(error)
    for source, target in LINKED_FIELDS.items():
        if message.startswith(f"{target}="):
            return ValueError(source + message[len(target):])
    return error


def main(args: list[str] | None = None) -> MoTGRPOCLI:
    try:
        with warnings.catch_warnings():
            # Lightning warns that a manually optimised module's step checkpoints hold the weights after
            # the update: what resuming needs here (a step's rollouts, update and data position are saved
            # together, tests/test_resume.py), so the warning would only mislead.
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning)
            return MoTGRPOCLI(MoTGRPOModule, ReasoningGymDataModule, save_config_kwargs={"overwrite": True}, args=args)
    except ValueError as error:
        renamed = _named_as_set(error)
        if renamed is error:
            raise
        raise renamed from error


def command_line(args: list[str] | None = None) -> None:
    """:func:`main` for ``python main.py``: an error whose chain names a config field (``model.…``,
    ``data.…``, ``trainer.…``) is printed as ``error: <message>`` and the process exits with
    status 2, as argparse does for a malformed flag; any other error keeps its traceback."""
    try:
        main(args)
    except Exception as error:
        named = _naming_a_field(error)
        if not str(named).startswith(FIELD_PREFIXES):
            raise
        message = " ".join(str(named).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
