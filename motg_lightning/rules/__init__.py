"""Mixture rules: how one thinking step turns next-token logits into the next input.

:mod:`.base` holds the interface every rule implements (:class:`MixtureRule`); :mod:`.paper` the
rules of the MoT-G paper; :mod:`.related`, :mod:`.dense` and :mod:`.hybrid` the related methods of
the field (:mod:`.parameters`: where a rule's own trained parameters live);
:mod:`.filters` the top-p/min-p filters every rule samples under; :mod:`.densities` the
probability densities of the density likelihoods; :mod:`.registry` the table of trainable rules
(:data:`REGISTRY`). Every rule class is exported here, so a config names it as
``motg_lightning.rules.<Rule>``.
"""

from .base import MixtureRule, MixtureStep
from .dense import Gaussian, MixtureOfInputs
from .hybrid import HRPO
from .paper import Dirichlet, Discrete, ElementwiseMax, Greedy, Nucleus, Sampled, TopK
from .parameters import attach_rule_parameters
from .registry import REGISTRY, RegisteredRule
from .related import Gumbel, LatentGRPO, Multiplex

__all__ = [
    "Dirichlet", "Discrete", "ElementwiseMax", "Gaussian", "Greedy", "Gumbel", "HRPO", "LatentGRPO", "MixtureOfInputs",
    "MixtureRule", "MixtureStep", "Multiplex", "Nucleus", "REGISTRY", "RegisteredRule", "Sampled", "TopK",
    "attach_rule_parameters",
]
