"""``LightningCLI`` entry point: ``python main.py fit --config configs/default.yaml``."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LightningCLI

from .data import ReasoningGymDataModule
from .module import MoTGRPOModule


class MoTGRPOCLI(LightningCLI):
    """The CLI of this library: the data module's tokenizer follows the model, and a trainer that
    asks for GPUs the machine lacks is refused with the setting to change."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        accelerator = config["trainer"]["accelerator"]
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"trainer.accelerator={accelerator}: this machine has no CUDA GPU; use trainer.accelerator=cpu "
                "(or auto), or run on a GPU machine."
            )


def main(args: list[str] | None = None) -> MoTGRPOCLI:
    return MoTGRPOCLI(MoTGRPOModule, ReasoningGymDataModule, save_config_kwargs={"overwrite": True}, args=args)
