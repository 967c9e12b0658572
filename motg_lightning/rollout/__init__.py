"""The rollout: mixture-of-token generation over input embeddings (MoT-G).

:mod:`.generate` is the decode loop (choose, record, phase update, next logits), :mod:`.phase`
each sequence's phase (thinking, forcing, stopping), :mod:`.record` what the loop records
(:class:`Rollout`), :mod:`.settings` its token-level settings, :mod:`.decoder` the model side (KV
cache, compiled decode step) and :mod:`.stops` the stop-string automaton.
"""

from .decoder import Decoder
from .generate import generate
from .record import Rollout, concatenate, eval_mode
from .settings import RolloutSettings

__all__ = ["Decoder", "Rollout", "RolloutSettings", "concatenate", "eval_mode", "generate"]
