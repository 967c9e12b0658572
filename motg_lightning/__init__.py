"""motg_lightning: mixture-of-token generation and GRPO as PyTorch Lightning components.

Every mixture rule is imported here, so that the command line lists it under ``--model.mixture``.
"""

from .data import ReasoningGymDataModule, TaskSpec
from .dense_rules import Gaussian, MixtureOfInputs
from .mixture import Dirichlet, Discrete, ElementwiseMax, MixtureRule, MixtureStep, Nucleus, Sampled, TopK
from .models import EMBEDDED_MODEL, TINY_MODEL, load_causal_lm, load_tokenizer
from .module import MoTGRPOModule
from .related_rules import Gumbel, Multiplex
from .rewards import RewardFunction
from .rollout import Rollout, RolloutSettings, generate

__all__ = [
    "Dirichlet", "Discrete", "ElementwiseMax", "EMBEDDED_MODEL", "Gaussian", "Gumbel", "MixtureOfInputs", "MixtureRule",
    "MixtureStep", "MoTGRPOModule", "Multiplex", "Nucleus", "ReasoningGymDataModule", "RewardFunction", "Rollout",
    "RolloutSettings", "Sampled", "TaskSpec", "TINY_MODEL", "TopK", "generate", "load_causal_lm", "load_tokenizer",
]
