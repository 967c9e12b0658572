"""The guarded optimizer step: non-finite gradients are skipped, then the run is told to stop."""

import torch

from motg_lightning.lightning.optimizer_step import GuardedOptimizerStep, gradient_norm


def setup(max_grad_norm=1.0, limit=2):
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    calls = {"clip": [], "after": 0}

    def clip(opt, norm):
        calls["clip"].append(norm)
        torch.nn.utils.clip_grad_norm_([parameter], norm)

    def after():
        calls["after"] += 1

    step = GuardedOptimizerStep(max_grad_norm, limit, clip=clip, after_step=after)
    return parameter, optimizer, scheduler, step, calls


def backward(parameter, scale):
    (parameter.sum() * scale).backward()
    return gradient_norm([parameter], torch.device("cpu"))


def test_a_finite_update_is_clipped_applied_and_followed_by_the_scheduler_and_the_reference_sync():
    parameter, optimizer, scheduler, step, calls = setup()
    norm = backward(parameter, 10.0)
    torch.testing.assert_close(norm, torch.tensor(10.0 * 3**0.5))
    assert step(optimizer, scheduler, norm)
    assert calls == {"clip": [1.0], "after": 1}
    assert parameter.grad is None and scheduler.get_last_lr() == [0.05]
    assert not torch.equal(parameter.detach(), torch.ones(3))


def test_non_finite_updates_are_skipped_and_the_limit_in_a_row_asks_to_stop():
    parameter, optimizer, scheduler, step, calls = setup(limit=2)
    assert not step(optimizer, scheduler, backward(parameter, float("nan")))
    assert parameter.grad is None and torch.equal(parameter.detach(), torch.ones(3)) and not step.should_stop
    assert step(optimizer, scheduler, backward(parameter, 1.0)), "a finite update resets the count"
    assert not step(optimizer, scheduler, backward(parameter, float("inf")))
    assert not step(optimizer, scheduler, backward(parameter, float("nan")))
    assert step.should_stop and calls["after"] == 1


def test_without_a_clip_norm_nothing_is_clipped():
    parameter, optimizer, scheduler, step, calls = setup(max_grad_norm=None)
    assert step(optimizer, None, backward(parameter, 10.0))
    assert calls["clip"] == []
