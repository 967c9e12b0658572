"""motg_lightning: mixture-of-token generation and GRPO as PyTorch Lightning components.

Every mixture rule is imported here, so that the command line lists it under ``--model.mixture``.
"""

from .lightning.data import ReasoningGymDataModule, TaskSpec
from .lightning.distributed import FSDP2Strategy
from .lightning.module import MoTGRPOModule
from .models import EMBEDDED_MODEL, TINY_MODEL, load_causal_lm, load_tokenizer
from .rewards import RewardFunction
from .rollout import Rollout, RolloutSettings, generate
from .rules import (
    Dirichlet, Discrete, ElementwiseMax, Gaussian, Gumbel, MixtureOfInputs, MixtureRule, MixtureStep, Multiplex, Nucleus,
    Sampled, TopK,
)

__all__ = [
    "Dirichlet", "Discrete", "ElementwiseMax", "EMBEDDED_MODEL", "FSDP2Strategy", "Gaussian", "Gumbel", "MixtureOfInputs",
    "MixtureRule", "MixtureStep", "MoTGRPOModule", "Multiplex", "Nucleus", "ReasoningGymDataModule", "RewardFunction",
    "Rollout", "RolloutSettings", "Sampled", "TaskSpec", "TINY_MODEL", "TopK", "generate", "load_causal_lm",
    "load_tokenizer",
]
