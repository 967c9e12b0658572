"""Training's own random stream: draws outside it do not move it, and it survives checkpoints."""

import torch

from motg_lightning.models import TINY_MODEL
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.random_state import TrainingRandomState
from motg_lightning.lightning.options import GRPOOptions, RolloutOptions
from motg_lightning.lightning.resume_state import CHECKPOINT_KEY

CPU = torch.device("cpu")


def test_draws_outside_the_stream_do_not_move_it_and_it_does_not_move_theirs():
    stream, reference = TrainingRandomState(seed=3), torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    outer = torch.get_rng_state()
    with stream.active(CPU):
        first = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), outer), "the global generator is as it was"
    torch.rand(100)  # validation, say
    with stream.active(CPU):
        second = torch.multinomial(torch.ones(10), 3)
    assert torch.equal(first, torch.rand(4, generator=reference))
    assert torch.equal(second, torch.multinomial(torch.ones(10), 3, generator=reference))


def test_the_stream_goes_on_from_its_saved_state():
    stream = TrainingRandomState(seed=5)
    with stream.active(CPU):
        torch.rand(7)
    restored = TrainingRandomState(seed=0)
    restored.load_state_dict(stream.state_dict())
    with stream.active(CPU):
        expected = torch.rand(3)
    with restored.active(CPU):
        assert torch.equal(torch.rand(3), expected)


def test_a_module_saves_its_stream_and_resumes_it_at_fit_start():
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2))
    module.training_random.seed(11)
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert len(checkpoint[CHECKPOINT_KEY]["training_rng"]) == 1, "one state per rank"
    resumed = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2))
    resumed.on_load_checkpoint(checkpoint)
    resumed.on_fit_start()
    with module.training_random.active(CPU):
        expected = torch.rand(3)
    with resumed.training_random.active(CPU):
        assert torch.equal(torch.rand(3), expected)


def test_an_older_checkpoint_with_the_global_generator_state_resumes_from_it():
    """Before training had a stream of its own, rollouts drew from the global generator, saved as ``rollout_rng``."""
    state = torch.Generator().manual_seed(8).get_state()
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2))
    module.on_load_checkpoint({"rollout_rng": {"cpu": state, "cuda": []}})
    module.on_fit_start()
    with module.training_random.active(CPU):
        assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(8)))


def test_validation_between_training_steps_changes_no_training_draw():
    """Validation rolls out with the global generator; training's rollouts and weights are those of a run without it."""
    import lightning as L
    from ddp_probe import RewardByLength

    from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec

    def trained(validate: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        L.seed_everything(0)
        module = MoTGRPOModule(TINY_MODEL, reward=RewardByLength(), optimizer=lambda p: torch.optim.SGD(p, lr=1.0), grpo=GRPOOptions(num_generations=2), rollout=RolloutOptions(max_new_tokens=4))
        module.configure_model()
        initial = [p.detach().clone() for p in module.policy.parameters()]
        data = ReasoningGymDataModule(tasks=[TaskSpec("basic_arithmetic", config={"max_terms": 2, "max_digits": 1})],
                                      tokenizer=TINY_MODEL, train_size=8, val_size=4, test_size=4, batch_size=2, eval_batch_size=4)
        L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=1,
                  limit_val_batches=1 if validate else 0).fit(module, data)
        return initial, [p.detach().clone() for p in module.policy.parameters()]

    initial, with_validation = trained(validate=True)
    _, without = trained(validate=False)
    assert any(not torch.equal(a, b) for a, b in zip(initial, without)), "the rollouts moved the weights"
    for a, b in zip(with_validation, without):
        assert torch.equal(a, b)
