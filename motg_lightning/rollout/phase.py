"""Where each row of a rollout stands: thinking, forcing the answer, answering or finished (:class:`Phase`).

A row starts thinking (its prompt opened ``<think>``) and feeds the rule's mixtures. Thinking ends
when its tokens write ``</think>`` (matched on their text by :class:`.stops.TokenPatterns`), or when
forcing appends the last of ``forced_ids`` (e.g. ``</think>\\n<answer>``) for it. Forcing starts on
a row still thinking when

* it has spent its thinking budget (budget forcing of s1, Muennighoff et al., arXiv 2501.19393);
* its last ``cold_stop_steps`` thinking steps were all confident, their next-token entropy below
  ``cold_stop_entropy`` (Soft Thinking's "cold stop", Zhang et al., arXiv 2505.15778);
* the rule drew EOS while ``force_answer_on_eos`` (the model said it was done; the answer is
  opened for it instead of the sequence ending).

With no ``forced_ids`` nothing ever starts forcing: thinking ends only with a written ``</think>``.
A row finishes at EOS or a stop string (``</answer>``) and writes ``pad_id`` from then on.

Every method is a function of tensors (no host sync, no Python branch on tensor values), returning
a new phase, so that a decode step built from them compiles as one graph.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..rules.base import MixtureStep
from .settings import RolloutSettings


@dataclass
class Phase:
    """The phase of ``N`` rows.

    Attributes:
        settings: the rollout's settings (its marker automata moved to the rows' device).
        eos_ids: ``[E]`` ids that end a sequence, on the rows' device.
        forced_ids: ``[F]`` ids appended by forcing, on the rows' device; None: nothing is forced.
        thinking: ``[N]`` the row has not ended its thinking phase.
        finished: ``[N]`` the row has stopped (EOS or a stop string).
        think_steps: ``[N]`` thinking steps taken so far (the budget's count).
        cold_run: ``[N]`` consecutive confident mixed steps (the cold stop's count).
        force_at: ``[N]`` index into ``forced_ids`` of the row's next forced token; -1: not forcing.
        think_state, stop_state: ``[N, markers]`` states of the ``</think>`` and stop automata.
    """

    settings: RolloutSettings
    eos_ids: Tensor
    forced_ids: Tensor | None
    thinking: Tensor
    finished: Tensor
    think_steps: Tensor
    cold_run: Tensor
    force_at: Tensor
    think_state: Tensor
    stop_state: Tensor

    @classmethod
    def start(cls, settings: RolloutSettings, rows: int, device: torch.device) -> Phase:
        """``rows`` rows thinking, nothing forced, matched or finished yet."""
        think_end, stop = settings.think_end.to(device), settings.stop.to(device)  # (moved in place)
        forced_ids = settings.forced_ids.to(device) if settings.forced_ids.numel() > 0 else None
        counts = torch.zeros(rows, dtype=torch.long, device=device)
        return cls(
            settings=settings, eos_ids=settings.eos_ids.to(device), forced_ids=forced_ids,
            thinking=torch.ones(rows, dtype=torch.bool, device=device),
            finished=torch.zeros(rows, dtype=torch.bool, device=device),
            think_steps=counts, cold_run=counts.clone(), force_at=torch.full_like(counts, -1),
            think_state=think_end.initial_state(rows), stop_state=stop.initial_state(rows),
        )

    @property
    def forcing(self) -> Tensor:
        """``[N]`` the row's next token is a forced one."""
        return self.force_at >= 0

    @property
    def mixing(self) -> Tensor:
        """``[N]`` the row feeds the rule's mixture: thinking and not forcing."""
        return self.thinking & ~self.forcing

    def begin_forcing(self, drawn: Tensor) -> Phase:
        """Rows thinking whose thinking must stop now start forcing (``drawn``: ``[N]`` the rule's
        representative tokens of this step, for ``force_answer_on_eos``)."""
        if self.forced_ids is None:
            return self
        starts = self.thinking & ~self.forcing & self._thinking_stops(drawn)
        return replace(self, force_at=torch.where(starts, 0, self.force_at))

    def _thinking_stops(self, drawn: Tensor) -> Tensor:
        """``[N]`` budget spent, a cold stop, or EOS drawn: each only where its setting is on."""
        settings, stops = self.settings, torch.zeros_like(self.thinking)
        if settings.thinking_budget is not None:
            stops = stops | (self.think_steps >= settings.thinking_budget)
        if settings.cold_stop_entropy is not None:
            stops = stops | (self.cold_run >= settings.cold_stop_steps)
        if settings.force_answer_on_eos:
            stops = stops | torch.isin(drawn, self.eos_ids)
        return stops

    def next_input(self, mixed: MixtureStep, sampled: Tensor) -> MixtureStep:
        """What each row feeds the model: the rule's ``mixed`` step while mixing; otherwise its token
        alone (in every support slot, weights ``(1, 0, ..., 0)``): the next forced id, else the plain
        draw ``sampled`` (``[N]``), and ``pad_id`` once finished. A rule's draws only describe mixed
        steps (masked, not multiplied: draws may be -inf)."""
        token = torch.where(self.thinking, mixed.token, sampled)
        if self.forced_ids is not None:
            token = torch.where(self.forcing, self.forced_ids[self.force_at.clamp_min(0)], token)
        token = torch.where(self.finished, self.settings.pad_id, token)
        mixing = self.mixing
        rows, k = mixed.support.shape
        first_slot = torch.nn.functional.one_hot(torch.zeros_like(token), k).float()
        support = torch.where(mixing[:, None], mixed.support, token[:, None].expand(rows, k))
        weights = torch.where(mixing[:, None], mixed.weights, first_slot)
        extras = {
            name: value.masked_fill(~mixing.view(rows, *[1] * (value.dim() - 1)), 0) for name, value in mixed.extras.items()
        }
        return MixtureStep(support, weights, token, extras)

    def update(self, token: Tensor, entropy: Tensor) -> Phase:
        """The phase after each row appended ``token`` (``[N]``), drawn from a next-token
        distribution of entropy ``entropy`` (``[N]``, nats). Finished rows keep their counts and
        marker states."""
        active = ~self.finished
        think_state, think_ended = self.settings.think_end.advance(self.think_state, token, active)
        stop_state, stopped = self.settings.stop.advance(self.stop_state, token, active)
        force_at, forced_all = self._next_forced()
        return replace(
            self,
            thinking=self.thinking & ~think_ended & ~forced_all,  # forcing always ends thinking
            finished=self.finished | torch.isin(token, self.eos_ids) | stopped,
            think_steps=self.think_steps + (self.thinking & active).long(),
            cold_run=self._cold_run(entropy, active),
            force_at=force_at, think_state=think_state, stop_state=stop_state,
        )

    def _next_forced(self) -> tuple[Tensor, Tensor]:
        """``(force_at, forced_all)``: forcing rows move to their next forced id; rows past the last
        one (``forced_all``, ``[N]``) stop forcing."""
        if self.forced_ids is None:
            return self.force_at, torch.zeros_like(self.thinking)
        force_at = torch.where(self.forcing, self.force_at + 1, self.force_at)
        forced_all = force_at >= self.forced_ids.numel()
        return torch.where(forced_all, -1, force_at), forced_all

    def _cold_run(self, entropy: Tensor, active: Tensor) -> Tensor:
        """``[N]`` the run of confident mixed steps, one longer where this one was, else 0."""
        if self.settings.cold_stop_entropy is None:
            return self.cold_run
        confident = self.mixing & active & (entropy < self.settings.cold_stop_entropy)
        return torch.where(confident, self.cold_run + 1, 0)
