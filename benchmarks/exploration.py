"""Exploration measures of a trained checkpoint on its held-out questions.

    python benchmarks/exploration.py runs/default/mot_grpo/version_0/checkpoints/last.ckpt --groups 8
    python benchmarks/exploration.py CKPT --rule motg_lightning.rules.Discrete   # the same model, another rule

Rolls out ``--groups`` validation questions ``num_generations`` times each with the checkpoint's
rule (or ``--rule``) and prints, as defined in ``docs/exploration.md``: next-token and
mixture-weight entropy along the reasoning (step buckets), distinct-token fraction and member
overlap per group, and the hidden-state matrix entropy per layer. Writes JSON and a PNG beside.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from motg_lightning.lightning.data import ReasoningGymDataModule  # noqa: E402
from motg_lightning.evaluation.exploration import hidden_state_entropy, profile_by_step, token_exploration  # noqa: E402
from motg_lightning.lightning.module import MoTGRPOModule  # noqa: E402
from motg_lightning.lightning.step_logging import EXPLORATION_BUCKETS  # noqa: E402


def load_rule(path: str):
    module_name, class_name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), class_name)()


def measure(checkpoint: Path, groups: int, rule_path: str | None, seed: int) -> dict:
    torch.manual_seed(seed)
    module = MoTGRPOModule.load_from_checkpoint(checkpoint, map_location="cpu")
    module.configure_model()
    rule = load_rule(rule_path) if rule_path else module.mixture
    data_options = torch.load(checkpoint, map_location="cpu", weights_only=False).get("datamodule_hyper_parameters", {})
    data_options = {name: value for name, value in data_options.items() if not name.startswith("_")}  # LightningCLI's own keys
    data = ReasoningGymDataModule(**{**data_options, "eval_batch_size": groups})
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    group_size = module.options.grpo.num_generations
    rollout = module.roll_out(batch, group_size, rule=rule).rollout
    thinking = rollout.thinking & rollout.completion_mask
    return {
        "checkpoint": str(checkpoint), "rule": repr(rule), "groups": len(batch["entries"]),
        "group_size": group_size,
        "entropy_by_step": profile_by_step(rollout.entropy, thinking, EXPLORATION_BUCKETS).tolist(),
        "weight_entropy_by_step": profile_by_step(rollout.weight_entropy, thinking, EXPLORATION_BUCKETS).tolist(),
        **token_exploration(rollout.tokens, thinking, group_size),
        "hidden_entropy_by_layer": hidden_state_entropy(module.policy.eval(), rule, rollout).tolist(),
    }


def plot(result: dict, path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(result["entropy_by_step"], marker="o", label="next-token entropy")
    axes[0].plot(result["weight_entropy_by_step"], marker="s", label="mixture-weight entropy")
    axes[0].set_xlabel("thinking-step bucket")
    axes[0].set_ylabel("nats")
    axes[0].legend()
    axes[1].plot(result["hidden_entropy_by_layer"], marker="o")
    axes[1].set_xlabel("layer (0 = embeddings)")
    axes[1].set_ylabel("normalised matrix entropy")
    figure.suptitle(f"{Path(result['checkpoint']).name}: {result['rule']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--groups", type=int, default=8, help="held-out questions, each rolled out num_generations times")
    parser.add_argument("--rule", help="another rule's class path (default: the checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON path (default: beside the checkpoint); the PNG goes beside it")
    args = parser.parse_args()
    result = measure(args.checkpoint, args.groups, args.rule, args.seed)
    out = args.out or args.checkpoint.with_suffix(".exploration.json")
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    for name, value in result.items():
        print(f"{name:<24}{[round(v, 4) for v in value] if isinstance(value, list) else value}")


if __name__ == "__main__":
    main()
