"""Micro-batches of the update: a token budget, and padding to the busiest process."""

import torch

from motg_lightning.grpo.micro_batches import MicroBatch, micro_batches
from motg_lightning.lightning.options import MemoryOptions

ROWS, LENGTH = 10, 100  # rollouts of 60 prompt + 40 completion positions


def slices(batches):
    return [batch.rows for batch in batches], sum(batch.counted for batch in batches)


def test_micro_batches_respect_the_token_budget():
    size = MemoryOptions(micro_batch_size=8, micro_batch_tokens=250).rows_per_micro_batch(LENGTH)
    assert slices(micro_batches(ROWS, size)) == ([slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8), slice(8, 10)], 5)
    unlimited = MemoryOptions(micro_batch_size=8).rows_per_micro_batch(LENGTH)
    assert slices(micro_batches(ROWS, unlimited)) == ([slice(0, 8), slice(8, 10)], 2)


def test_micro_batches_are_padded_to_the_busiest_rank():
    """Another rank has four micro-batches: this one runs four too, the extra ones not counted."""
    batches = micro_batches(ROWS, 8, busiest=lambda count: max(count, 4))
    assert slices(batches) == ([slice(0, 8), slice(8, 10), slice(0, 1), slice(0, 1)], 2)


def test_a_padding_micro_batch_counts_no_step():
    loss_mask = torch.ones(3, 5, dtype=torch.bool)
    assert MicroBatch(slice(0, 2)).loss_mask(loss_mask).sum() == 10
    assert not MicroBatch(slice(0, 1), counted=False).loss_mask(loss_mask).any()
