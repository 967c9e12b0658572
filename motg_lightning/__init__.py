"""motg_lightning: mixture-of-token generation and GRPO as PyTorch Lightning components."""

from .data import ReasoningGymDataModule, TaskSpec
from .mixture import Dirichlet, Discrete, ElementwiseMax, MixtureRule, MixtureStep, Nucleus, Sampled, TopK
from .models import EMBEDDED_MODEL, TINY_MODEL, load_causal_lm, load_tokenizer
from .module import MoTGRPOModule
from .rewards import RewardFunction
from .rollout import Rollout, RolloutSettings, generate

__all__ = [
    "Dirichlet", "Discrete", "ElementwiseMax", "EMBEDDED_MODEL", "MixtureRule", "MixtureStep", "MoTGRPOModule",
    "Nucleus", "ReasoningGymDataModule", "RewardFunction", "Rollout", "RolloutSettings", "Sampled", "TaskSpec",
    "TINY_MODEL", "TopK", "generate", "load_causal_lm", "load_tokenizer",
]
