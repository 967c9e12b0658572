"""``LightningCLI`` entry point: ``python main.py fit --config configs/default.yaml``."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import FSDPStrategy

from .data import ReasoningGymDataModule
from .module import MoTGRPOModule

FIELD_PREFIXES = ("model.", "data.", "trainer.")


class MoTGRPOCLI(LightningCLI):
    """The CLI of this library: the data module's tokenizer follows the model, and a trainer that
    asks for GPUs the machine lacks (a GPU accelerator, or FSDP1, which Lightning runs on CUDA
    only) is refused before any model is loaded, with the setting to change."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
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


def main(args: list[str] | None = None) -> MoTGRPOCLI:
    return MoTGRPOCLI(MoTGRPOModule, ReasoningGymDataModule, save_config_kwargs={"overwrite": True}, args=args)
