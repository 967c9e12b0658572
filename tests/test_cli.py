"""The command line as a user runs it: fit, print_config, resume, rule selection."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motg_lightning.cli import main
from motg_lightning.module import MoTGRPOModule

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from startup_errors import applicable_settings, save_base_model, with_base_model  # noqa: E402

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def fit(tmp_path, *extra):
    return main(["fit", "--config", SMOKE, f"--trainer.default_root_dir={tmp_path}", *extra])


def test_fit_writes_tensorboard_logs_and_a_checkpoint_then_resumes(tmp_path):
    cli = fit(tmp_path)
    assert cli.trainer.global_step == 2
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) == 1
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    state = torch.load(checkpoints[0], weights_only=False)
    assert not any("reference" in key for key in state["state_dict"])
    loaded = MoTGRPOModule.load_from_checkpoint(checkpoints[0])
    trained = dict(cli.model.policy.named_parameters())
    assert type(loaded.mixture).__name__ == "Dirichlet"
    assert all(torch.equal(trained[name], value) for name, value in loaded.policy.named_parameters())

    resumed = fit(tmp_path, "--trainer.max_steps=4", f"--ckpt_path={checkpoints[0]}")
    assert resumed.trainer.global_step == 4
    first = dict(cli.model.policy.named_parameters())
    assert any(not torch.equal(first[name], value) for name, value in resumed.model.policy.named_parameters())


@pytest.mark.parametrize("rule", ["Discrete", "TopK", "Dirichlet", "Sampled", "Nucleus", "ElementwiseMax"])
def test_every_mixture_rule_is_selectable_from_the_command_line(tmp_path, rule):
    cli = fit(tmp_path, "--trainer.max_steps=1", "--trainer.limit_val_batches=0", f"--model.mixture=motg_lightning.mixture.{rule}")
    assert type(cli.model.mixture).__name__ == rule
    assert cli.trainer.global_step == 1


def test_print_config_shows_the_resolved_configuration():
    result = subprocess.run(
        [sys.executable, "main.py", "fit", "--config", SMOKE, "--model.mixture.k=3", "--print_config"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert "class_path: motg_lightning.mixture.Dirichlet" in result.stdout
    assert "k: 3" in result.stdout
    assert "model_name_or_path: tiny-random:SmolLM2-135M-Instruct" in result.stdout


def configured_model_options(path):
    import yaml

    return {name: value for name, value in yaml.safe_load(path.read_text())["model"].items() if name != "mixture"}


METHOD_CONFIGS = sorted((ROOT / "configs" / "methods").glob("*.yaml"))


@pytest.mark.parametrize("method", METHOD_CONFIGS, ids=lambda path: path.stem)
def test_every_method_config_trains(tmp_path, method):
    import yaml

    cli = fit(tmp_path, "--config", str(method), "--trainer.max_steps=1", "--trainer.limit_val_batches=0")
    configured = yaml.safe_load(method.read_text())["model"].get("mixture")
    if configured is not None:
        assert type(cli.model.mixture).__name__ == configured["class_path"].rsplit(".", 1)[1]
        for name, value in configured["init_args"].items():
            assert getattr(cli.model.mixture, name) == value
    for name, value in configured_model_options(method).items():
        assert cli.model.hparams[name] == value
    assert cli.trainer.global_step == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert torch.isfinite(cli.trainer.callback_metrics["train/grad_norm"])


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return save_base_model(tmp_path_factory.mktemp("base-model"))


@pytest.mark.parametrize("mistake, flags, message", applicable_settings(), ids=[row[0] for row in applicable_settings()])
def test_each_invalid_setting_fails_before_any_rollout_naming_the_field(tmp_path, monkeypatch, base_model, mistake, flags, message):
    """Issue 7's list of mistakes, through the command line: each raises its message (the field
    and the fix) before a single rollout; `benchmarks/startup_errors.py` times the same rows."""
    def no_rollout(*args, **kwargs):
        raise AssertionError("a rollout started before the setting was refused")

    monkeypatch.setattr("motg_lightning.module.generate", no_rollout)
    with pytest.raises(ValueError) as refused:
        fit(tmp_path, *with_base_model(flags, base_model))
    assert re.match(message, str(refused.value)), f"the message must start with the field: {refused.value}"
