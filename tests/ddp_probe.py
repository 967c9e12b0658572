"""A callback the distributed tests add to ``fit``: each rank writes what it saw and did."""

import hashlib
import json
import os
import time
from pathlib import Path

import lightning as L
import torch

from motg_lightning.rewards.scoring import RewardFunction


TESTS = Path(__file__).resolve().parent


def probe_environment(directory: Path, **extra: str) -> dict[str, str]:
    """Environment of a ``main.py`` subprocess that can load these callbacks and write into ``directory``."""
    path = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    return {**os.environ, "MOTG_PROBE_DIR": str(directory), "PYTHONPATH": path, **extra}


def read_ranks(directory: Path, count: int) -> list[dict]:
    """The records :class:`RankProbe` wrote for ranks ``0 … count − 1``."""
    return [json.loads((Path(directory) / f"rank_{rank}.json").read_text()) for rank in range(count)]


class RankProbe(L.Callback):
    """Writes ``rank_<r>.json`` into ``$MOTG_PROBE_DIR``: per step the questions of the batch,
    this rank's rollout size, mean reward and time, the logged (reduced) reward and a hash of the
    training random stream's state after the step; at the end a checksum and a hash of the
    policy's parameters (gathered when sharded) and the peak GPU memory."""

    def __init__(self):
        self.steps = []
        self.started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({
            "seconds": time.perf_counter() - self.started,
            "questions": [entry["question"] for entry in batch["entries"]],
            "step": trainer.global_step,
            "loss": float(outputs["loss"]),
            "rng": hashlib.sha1(pl_module.training_random.state_dict()["cpu"].numpy().tobytes()).hexdigest(),
            "local_rows": int(outputs["local_rows"]),
            "local_reward": float(outputs["local_reward"]),
            "logged_reward": float(trainer.callback_metrics["train/reward"]),
            "rewards": outputs["rewards"].tolist(),
            "advantages": outputs["advantages"].tolist(),
            "policy_steps": int(outputs["policy_steps"]),
            "rollout_seconds": float(trainer.callback_metrics["train/rollout_seconds"]),
            "update_seconds": float(trainer.callback_metrics["train/update_seconds"]),
        })
        if pl_module.options.grpo.top_entropy_quantile < 1:  # only then: long runs would write every step's entropies
            self.steps[-1]["counted_entropy"] = outputs["entropy"][outputs["loss_mask"]].tolist()

    def on_train_end(self, trainer, pl_module):
        checksum = sum(float(p.detach().full_tensor().double().sum() if hasattr(p, "full_tensor") else p.detach().double().sum())
                       for p in pl_module.policy.parameters())
        later = [step["seconds"] for step in self.steps[1:]] or [step["seconds"] for step in self.steps]
        cuda = pl_module.device.type == "cuda"
        weights = hashlib.sha1()
        for p in pl_module.policy.parameters():
            value = p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach()
            weights.update(value.cpu().contiguous().view(torch.uint8).numpy().tobytes())
        record = {
            "rank": trainer.global_rank, "world_size": trainer.world_size, "steps": self.steps, "checksum": checksum,
            "weights": weights.hexdigest(),
            "seconds_per_step": sum(later) / len(later),
            "peak_memory_gib": torch.cuda.max_memory_allocated(pl_module.device) / 2**30 if cuda else float("nan"),
        }
        Path(os.environ["MOTG_PROBE_DIR"], f"rank_{trainer.global_rank}.json").write_text(json.dumps(record))


class RewardByLength(RewardFunction):
    """The completion's length in characters: rewards that vary within groups and between ranks
    even for a random model's text."""

    def __call__(self, completions, entries):
        output = super().__call__(completions, entries)
        output.total = torch.tensor([float(len(text)) for text in completions])
        return output


class HangAtStep(L.Callback):
    """Writes ``$MOTG_PROBE_DIR/hanging`` and sleeps when training step ``$MOTG_HANG_AT_STEP``
    starts, so a test can kill the process in the middle of a step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == int(os.environ["MOTG_HANG_AT_STEP"]):
            Path(os.environ["MOTG_PROBE_DIR"], "hanging").write_text(str(os.getpid()))
            time.sleep(600)
