"""Helpers shared by the rule tests: random distributions and an embedding to mix."""

import torch

VOCAB = 50
EMBEDDING = torch.nn.Embedding(VOCAB, 8)


def random_log_probs(batch=64, vocab=VOCAB, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(batch, vocab, generator=generator), -1)
