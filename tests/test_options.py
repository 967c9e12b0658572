"""The settings groups: each refuses its impossible values naming the field; old flat keys are
refused with their new place."""

import pytest

from motg_lightning.lightning.cli import refuse_moved_keys
from motg_lightning.lightning.options import (
    MOVED_KEYS, EvaluationOptions, GRPOOptions, LoggingOptions, MemoryOptions, ModuleOptions, RolloutOptions,
)


@pytest.mark.parametrize("group, fields, message", [
    (RolloutOptions, {"sync_every": 0}, "model.rollout.sync_every=0: must be at least 1."),
    (RolloutOptions, {"thinking_budget": -1}, r"model.rollout.thinking_budget=-1: must be >= 0 \(0 forces"),
    (RolloutOptions, {"top_p": 0.0}, r"model.rollout.top_p=0.0: must be in \(0, 1\]"),
    (RolloutOptions, {"cold_stop_entropy": 0.0}, "model.rollout.cold_stop_entropy=0.0: must be > 0 nats"),
    (RolloutOptions, {"stop_strings": [""]}, r"model.rollout.stop_strings=\[''\]: an empty string"),
    (RolloutOptions, {"compile_decode": "fastest"}, "model.rollout.compile_decode='fastest': not a torch.compile mode"),
    (GRPOOptions, {"max_grad_norm": 0.0}, "model.grpo.max_grad_norm=0.0: must be > 0"),
    (GRPOOptions, {"epsilon_high": -1.0}, "model.grpo.epsilon=0.2, model.grpo.epsilon_high=-1.0"),
    (MemoryOptions, {"logit_chunk_size": 0}, "model.memory.logit_chunk_size=0: must be at least 1."),
    (EvaluationOptions, {"samples": 0}, "model.evaluation.samples=0: must be at least 1."),
    (LoggingOptions, {"exploration_every_n_steps": -1}, r"model.logging.exploration_every_n_steps=-1: must be >= 0"),
])
def test_each_group_refuses_an_impossible_value_naming_the_field(group, fields, message):
    with pytest.raises(ValueError, match=message):
        group(**fields)


def test_the_groups_read_mappings_as_a_checkpoint_holds_them():
    options = ModuleOptions.of(rollout={"max_new_tokens": 7}, grpo=GRPOOptions(beta=0.1), memory={}, evaluation={},
                               logging=LoggingOptions())
    assert options.rollout.max_new_tokens == 7 and options.grpo.beta == 0.1
    assert ModuleOptions.of(**options.as_dicts()) == options


def test_every_old_flat_key_has_a_new_place_in_a_group():
    assert MOVED_KEYS["beta"] == "grpo.beta" and MOVED_KEYS["eval_samples"] == "evaluation.samples"
    for old, new in MOVED_KEYS.items():
        group, field = new.split(".")
        assert field in ModuleOptions.of(**{g: {} for g in ("rollout", "grpo", "memory", "evaluation", "logging")}).as_dicts()[group]


def test_old_flat_keys_are_refused_with_their_new_place(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  num_generations: 4\n  eval_decoding: greedy\n  mixture: null\n")
    with pytest.raises(ValueError) as refused:
        refuse_moved_keys(["fit", "--config", str(old), "--model.beta=0.1", "--model.grpo.epsilon=0.3"])
    message = str(refused.value)
    assert message.startswith("model.num_generations, model.eval_decoding (in ")
    assert "are now model.grpo.num_generations, model.evaluation.decoding" in message
    assert "model.beta (in the command line) is now model.grpo.beta" in message
    assert "epsilon" not in message, "keys already in their group pass"
    refuse_moved_keys(["fit", "--model.grpo.beta=0.1", "--model.rollout.max_new_tokens=4"])
