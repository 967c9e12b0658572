"""Train or evaluate MoT-GRPO: ``python main.py fit --config configs/default.yaml``."""

from motg_lightning.lightning.cli import command_line

if __name__ == "__main__":
    command_line()
