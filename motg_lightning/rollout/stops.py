"""Detecting strings such as ``</think>`` in generated tokens, exactly and on the device.

A marker can reach the text split into tokens in any way the vocabulary allows (``"</" "think" ">"``,
``"<" "/" "th" "ink>\\n"``, ``".</think>"``, ...), and its first and last tokens may carry other
text. So each marker is matched on the text itself, by a Knuth-Morris-Pratt automaton: a row's
state is how many leading characters of the marker its text ends with (``0 .. len(marker) - 1``).
Two tables, indexed by state and token id, are built once from the text of every token id (as
:meth:`transformers.StopStringCriteria.clean_tokenizer_vocab` gives it):

* ``next_state[s, v]``: the state after the text of token ``v`` is appended in state ``s``;
* ``completes[s, v]``: whether that text, appended in state ``s``, completes the marker (anywhere
  in the token, also when text follows the marker in it).

A token holding none of the marker's characters sends every state to 0 and completes nothing (the
tables' default); only the others are run through the automaton in Python, and only from every
state when their first character is one of the marker's (otherwise the start state is forgotten at
once) or their text is empty (then every state stays).

A decode step is then one gather over the ``[rows, markers]`` states: no decoding, no host sync,
fixed shapes (fine under ``torch.compile(fullgraph=True)``). Ids outside the vocabulary (a model's
padded embedding rows) read as tokens without any of the marker's characters; special tokens read as
their text, so a special-token marker such as ``<|im_end|>`` matches its single id. Characters are
compared as decoded: a token holding part of a multi-byte character decodes to U+FFFD, so a
non-ASCII marker is only seen when such characters are not split between tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase, StopStringCriteria


def marker_automaton(texts: list[str], ids: list[int], marker: str, size: int) -> tuple[Tensor, Tensor]:
    """``(next_state, completes)``, each ``[len(marker), size]``, for tokens ``ids`` of text ``texts``."""
    if not marker:
        raise ValueError("An empty stop string would match everywhere.")
    length, chars = len(marker), set(marker)

    def longest_prefix_ending(text: str) -> int:  # the longest prefix of the marker that ``text`` ends with
        return next(k for k in range(min(len(text), length), -1, -1) if text.endswith(marker[:k]))

    step = {(s, c): longest_prefix_ending(marker[:s] + c) for s in range(length) for c in chars}
    restart = longest_prefix_ending(marker[1:])  # the state right after a full match (overlaps allowed)

    def feed(state: int, text: str) -> tuple[int, bool]:
        hit = False
        for char in text:
            state = step.get((state, char), 0)
            if state == length:
                hit, state = True, restart
        return state, hit

    shared, each = {}, {}  # token -> its run from state 0 (the same from every state) / from every state
    for text, token in zip(texts, ids):
        if not text or text[0] in chars:  # (an empty text keeps every state)
            each[token] = [feed(s, text) for s in range(length)]
        elif not chars.isdisjoint(text):
            shared[token] = [feed(0, text)]
    next_state = torch.zeros(length, size, dtype=torch.int32)
    completes = torch.zeros(length, size, dtype=torch.bool)
    for runs in (shared, each):
        if runs:
            run = torch.tensor(list(runs.values()), dtype=torch.int32)  # [tokens, 1 or length, (state, hit)]
            next_state[:, list(runs)], completes[:, list(runs)] = run[..., 0].T, run[..., 1].T.bool()
    return next_state, completes


class TokenPatterns:
    """Markers matched on the text of generated tokens, with one automaton state per row and marker.

    ``state = patterns.initial_state(n)``, then per generated ``token`` (``[n]`` ids)
    ``state, matched = patterns.advance(state, token)``: ``matched`` is True at the step whose token
    completes any marker, never before.
    """

    def __init__(self, next_state: Tensor, completes: Tensor, starts: Tensor):
        # Rows: the states of all markers one after another (``next_state`` holds row numbers); columns:
        # token ids, then one for ids outside the vocabulary. ``starts``: each marker's state 0.
        self.next_state, self.completes, self.starts = next_state, completes, starts
        self.vocabulary = next_state.shape[1] - 1

    @classmethod
    def from_strings(cls, tokenizer: PreTrainedTokenizerBase, markers: list[str]) -> "TokenPatterns":
        texts, ids = StopStringCriteria.clean_tokenizer_vocab(tokenizer) if markers else ((), ())
        size = max(ids, default=-1) + 2  # the last column: ids outside the vocabulary
        tables = [marker_automaton(texts, ids, marker, size) for marker in markers]
        lengths = torch.tensor([len(marker) for marker in markers], dtype=torch.long)
        starts = torch.cumsum(lengths, 0) - lengths
        rows = [table + start for (table, _), start in zip(tables, starts.tolist())]
        next_state = torch.cat([torch.zeros(0, size, dtype=torch.int32), *rows])
        completes = torch.cat([torch.zeros(0, size, dtype=torch.bool), *(hit for _, hit in tables)])
        return cls(next_state, completes, starts)

    def to(self, device: torch.device) -> "TokenPatterns":
        self.next_state, self.completes, self.starts = (t.to(device) for t in (self.next_state, self.completes, self.starts))
        return self

    def initial_state(self, n: int) -> Tensor:
        """``[n, markers]`` states of rows that have generated nothing yet."""
        return self.starts.expand(n, -1).clone()

    def advance(self, state: Tensor, token: Tensor, active: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Feed ``token`` (``[n]`` ids) to every row: ``(state, matched)``, ``matched`` ``[n]`` bool.

        Rows where ``active`` (``[n]`` bool) is False (e.g. padding after a stop) keep their state
        and match nothing."""
        inside = (token >= 0) & (token < self.vocabulary)
        column = torch.where(inside, token, self.vocabulary)[:, None]
        advanced = self.next_state[state, column].long()
        matched = self.completes[state, column].any(-1)
        if active is None:
            return advanced, matched
        return torch.where(active[:, None], advanced, state), matched & active
