"""Helpers shared by the rule tests: random distributions and an embedding to mix."""

import torch

VOCAB = 50
EMBEDDING = torch.nn.Embedding(VOCAB, 8)


def random_log_probs(batch=64, vocab=VOCAB, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(batch, vocab, generator=generator), -1)


def carrying_rule_parameters(model, rule):
    """``model`` itself, or, for a rule that trains parameters of its own (HRPO's gate), a copy of
    it that carries them (the shared fixture model stays as it is)."""
    import copy

    from motg_lightning.rules import attach_rule_parameters

    if rule.build_parameters(model.get_input_embeddings()) is None:
        return model
    copied = copy.deepcopy(model)
    attach_rule_parameters(copied, rule)
    return copied
