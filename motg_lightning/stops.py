"""Detecting strings such as ``</think>`` by token-id suffix matching, on the device.

Decoding the text every step to look for a marker is quadratic and syncs with the host (the
paper's public code does so). Instead each marker is turned once into the token-id tails that can
end it, and a rolling window of the last generated ids is compared against all tails at once.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

_CONTEXTS = ("", " ", "\n", ".", "a")  # text that may precede the marker in one token
_FOLLOWERS = ("", "\n", "\n\n", " ")  # text the tokenizer may merge into the marker's last token


def marker_tails(tokenizer: PreTrainedTokenizerBase, marker: str) -> list[tuple[int, ...]]:
    """Token-id sequences whose last token completes ``marker``.

    For each plausible context the marker is tokenised, and the shortest tail of ids whose text
    contains the whole marker is kept, so merges with neighbouring characters are covered.
    """
    tails: set[tuple[int, ...]] = set()
    for before in _CONTEXTS:
        for after in _FOLLOWERS:
            ids = tokenizer.encode(before + marker + after, add_special_tokens=False)
            for start in range(len(ids) - 1, -1, -1):
                if marker in tokenizer.decode(ids[start:]):
                    tails.add(tuple(ids[start:]))
                    break
    # A tail that extends another one would only match a step after it: drop it.
    return sorted(t for t in tails if not any(t[: len(o)] == o for o in tails if len(o) < len(t)))


class TokenPatterns:
    """A set of token-id tails matched against the end of a ``[batch, width]`` id window."""

    def __init__(self, tails: list[tuple[int, ...]]):
        self.width = max((len(tail) for tail in tails), default=1)
        padded = [(-1,) * (self.width - len(tail)) + tail for tail in tails]
        self.ids = torch.tensor(padded, dtype=torch.long).reshape(len(tails), self.width)
        self.care = self.ids >= 0

    @classmethod
    def from_strings(cls, tokenizer: PreTrainedTokenizerBase, markers: list[str]) -> "TokenPatterns":
        return cls([tail for marker in markers for tail in marker_tails(tokenizer, marker)])

    def to(self, device: torch.device) -> "TokenPatterns":
        self.ids, self.care = self.ids.to(device), self.care.to(device)
        return self

    def matches(self, window: Tensor) -> Tensor:
        """``[batch]`` bool: does the window (last ids, newest last) end with any pattern?"""
        if self.ids.shape[0] == 0:
            return torch.zeros(window.shape[0], dtype=torch.bool, device=window.device)
        tail = window[:, -self.width :].unsqueeze(1)
        return ((tail == self.ids) | ~self.care).all(-1).any(-1)
