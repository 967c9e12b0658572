"""``LightningCLI`` entry point: ``python main.py fit --config configs/default.yaml``."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from .data import ReasoningGymDataModule
from .module import MoTGRPOModule


class MoTGRPOCLI(LightningCLI):
    """The CLI of this library: the data module's tokenizer follows the model."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")


def main(args: list[str] | None = None) -> MoTGRPOCLI:
    return MoTGRPOCLI(MoTGRPOModule, ReasoningGymDataModule, save_config_kwargs={"overwrite": True}, args=args)
