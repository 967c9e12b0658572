"""The trainable mixture rules, in one ordered table that everything else reads.

The benchmarks take their method names from it (``benchmarks/rollout.py``,
``benchmarks/grpo_step.py``), the contract tests run every entry, ``tests/test_cli.py`` checks
that ``--help`` lists each under ``--model.mixture``, and ``tests/test_registry.py``
checks it against the classes exported by :mod:`motg_lightning.rules`, the overlays in
``configs/methods/`` and the rules table of the README. A new rule is one class and one entry.

:class:`~motg_lightning.rules.paper.Greedy` is deliberately not here: it is evaluation decoding
(``model.evaluation.decoding: greedy``). Its argmax gives every completion of a group the same
text, so no advantage and nothing for GRPO to train.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Likelihood, MixtureRule
from .dense import Gaussian, MixtureOfInputs
from .hybrid import HRPO
from .paper import Dirichlet, Discrete, ElementwiseMax, Nucleus, Sampled, TopK
from .related import Gumbel, LatentGRPO, Multiplex


@dataclass(frozen=True)
class RegisteredRule:
    """One trainable rule.

    Attributes:
        name: short name, as the benchmarks' ``--methods`` take it.
        rule: the class (``motg_lightning.rules.<class>`` in a config).
        source: the paper or code it comes from, as its docstring cites it.
        arxiv: that paper's arXiv id.
        likelihood: the step likelihood it trains with unless told otherwise (its constructor's default).
        overlay: its file in ``configs/methods/``, which sets its paper's settings; None if none.
    """

    name: str
    rule: type[MixtureRule]
    source: str
    arxiv: str
    likelihood: Likelihood
    overlay: str | None = None


REGISTRY: dict[str, RegisteredRule] = {entry.name: entry for entry in (
    RegisteredRule("discrete", Discrete, "GRPO baseline of MoT-G", "2509.21482", "representative", "discrete.yaml"),
    RegisteredRule("topk", TopK, "Soft Thinking", "2505.15778", "representative", "topk.yaml"),
    RegisteredRule("dirichlet", Dirichlet, "MoT-G", "2509.21482", "representative", "dirichlet.yaml"),
    RegisteredRule("sampled", Sampled, 'MoT-G "different tokens"', "2509.21482", "weighted", "sampled.yaml"),
    RegisteredRule("nucleus", Nucleus, "MoT-G code option", "2509.21482", "representative", "nucleus.yaml"),
    RegisteredRule("elementwise_max", ElementwiseMax, "MoT-G code option", "2509.21482", "representative",
                   "elementwise_max.yaml"),
    RegisteredRule("gumbel", Gumbel, "SofT-GRPO", "2511.06411", "density", "gumbel.yaml"),
    RegisteredRule("multiplex", Multiplex, "Multiplex Thinking", "2601.08808", "sum", "multiplex.yaml"),
    RegisteredRule("gaussian", Gaussian, "Soft Tokens, Hard Truths", "2509.19170", "density", "gaussian.yaml"),
    RegisteredRule("mixture_of_inputs", MixtureOfInputs, "Mixture of Inputs", "2505.14827", "representative",
                   "mixture_of_inputs.yaml"),
    RegisteredRule("hrpo", HRPO, "HRPO", "2505.18454", "representative", "hrpo.yaml"),
    RegisteredRule("latent_grpo", LatentGRPO, "Latent-GRPO", "2604.27998", "density", "latent_grpo.yaml"),
)}
