"""The rollout: mixture-of-token generation over input embeddings (MoT-G).

:mod:`.generate` is the decode loop, :mod:`.step` its decode step (choose, record, phase update,
next logits; compiled whole with ``compile_decode``), :mod:`.phase` each sequence's phase
(thinking, forcing, stopping), :mod:`.record` what the loop records (:class:`Rollout`),
:mod:`.settings` its token-level settings, :mod:`.decoder` the model side (KV cache, compiling the
decode step) and :mod:`.stops` the stop-string automaton.
"""

from .decoder import Decoder
from .generate import generate
from .record import Rollout, concatenate, eval_mode
from .settings import RolloutSettings

__all__ = ["Decoder", "Rollout", "RolloutSettings", "concatenate", "eval_mode", "generate"]
