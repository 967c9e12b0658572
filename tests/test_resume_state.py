"""The resume state: one checkpoint key, and the keys of older checkpoints still read."""

import torch

from motg_lightning.lightning.resume_state import CHECKPOINT_KEY, ResumeState


def test_the_state_round_trips_under_one_key():
    state = ResumeState(training_rng=[{"seed": 1}, {"seed": 2}], refill_prompts={"passes": 3}, reference={"w": torch.ones(2)})
    checkpoint = {}
    state.save(checkpoint)
    assert list(checkpoint) == [CHECKPOINT_KEY]
    loaded = ResumeState.load(checkpoint)
    assert loaded.training_rng == state.training_rng and loaded.refill_prompts == {"passes": 3}
    assert torch.equal(loaded.reference["w"], torch.ones(2))
    assert loaded.rank_rng(1) == {"seed": 2} and loaded.rank_rng(2) is None


def test_unset_parts_are_not_saved():
    checkpoint = {}
    ResumeState(training_rng=[{"seed": 1}]).save(checkpoint)
    assert checkpoint[CHECKPOINT_KEY] == {"training_rng": [{"seed": 1}]}


def test_older_checkpoints_are_read_from_their_own_keys():
    position = {"passes": 2}
    state = ResumeState.load({"training_rng": [{"seed": 5}], "refill_prompts": position, "reference_state_dict": {"w": 1}})
    assert state.training_rng == [{"seed": 5}] and state.refill_prompts == position and state.reference == {"w": 1}
    cpu = torch.get_rng_state()
    oldest = ResumeState.load({"rollout_rng": {"cpu": cpu, "cuda": []}})
    assert torch.equal(oldest.rank_rng(0)["cpu"], cpu) and oldest.rank_rng(0)["cuda"] is None
