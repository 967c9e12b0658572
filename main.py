"""Train or evaluate MoT-GRPO: ``python main.py fit --config configs/default.yaml``."""

from motg_lightning.cli import main

if __name__ == "__main__":
    main()
