"""The command line as a user runs it: fit, print_config, resume, rule selection."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motg_lightning.lightning.cli import MoTGRPOCLI, command_line, main
from motg_lightning.lightning.data import ReasoningGymDataModule
from motg_lightning.lightning.module import MoTGRPOModule

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
    cli = fit(tmp_path, "--trainer.max_steps=1", "--trainer.limit_val_batches=0", f"--model.mixture=motg_lightning.rules.{rule}")
    assert type(cli.model.mixture).__name__ == rule
    assert cli.trainer.global_step == 1


def test_print_config_shows_the_resolved_configuration():
    result = subprocess.run(
        [sys.executable, "main.py", "fit", "--config", SMOKE, "--model.mixture.k=3", "--print_config"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert "class_path: motg_lightning.rules.Dirichlet" in result.stdout
    assert "k: 3" in result.stdout
    assert "model_name_or_path: tiny-random:SmolLM2-135M-Instruct" in result.stdout


def configured_model_options(path):
    """``(group, field) -> value`` of every grouped setting a config gives the module."""
    import yaml

    model = yaml.safe_load(path.read_text())["model"]
    return {(group, name): value for group, fields in model.items() if group != "mixture" for name, value in fields.items()}


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
    for (group, name), value in configured_model_options(method).items():
        assert getattr(getattr(cli.model.options, group), name) == value
    assert cli.trainer.global_step == cli.model.options.grpo.num_iterations, "one rollout, num_iterations optimizer steps"
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

    monkeypatch.setattr("motg_lightning.lightning.module.generate", no_rollout)
    with pytest.raises(ValueError) as refused:
        fit(tmp_path, *with_base_model(flags, base_model))
    assert re.match(message, str(refused.value)), f"the message must start with the field: {refused.value}"


def test_paper_config_resolves_to_the_paper_training_code_settings():
    """Issue 12, defect 4: configs/paper.yaml as the CLI resolves it (no model is loaded at
    --print_config) holds the audited values of docs/paper_config.md."""
    import yaml

    result = subprocess.run(
        [sys.executable, "main.py", "fit", "--config", str(ROOT / "configs" / "paper.yaml"), "--print_config"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    config = yaml.safe_load(result.stdout)
    trainer, model, data = config["trainer"], config["model"], config["data"]
    grpo, rollout, evaluation = model["grpo"], model["rollout"], model["evaluation"]
    assert grpo["loss_type"] == "grpo"  # each sequence averaged, then the rollouts
    assert (trainer["max_steps"], trainer["precision"], trainer["val_check_interval"]) == (250, "bf16-mixed", 12)
    assert (grpo["num_generations"], data["batch_size"], grpo["num_iterations"], grpo["beta"]) == (10, 4, 1, 0.1)
    assert (rollout["max_new_tokens"], data["max_prompt_length"], data["long_prompts"]) == (1024, 1024, "truncate")
    assert (evaluation["samples"], evaluation["decoding"]) == (10, "mixture")
    assert model["reward"]["init_args"]["preset"] == "paper"
    mixture = model["mixture"]
    assert mixture["class_path"] == "motg_lightning.rules.Dirichlet"
    assert {name: mixture["init_args"][name] for name in ("k", "temperature", "alpha", "likelihood")} == {
        "k": 2, "temperature": 0.9, "alpha": 1.0, "likelihood": "representative"}
    # The paper's 4 accumulated one-prompt losses add up to 4 x this batch mean: its AdamW step
    # (clip 0.1, eps 1e-8) is this AdamW step with clip and eps divided by 4.
    optimizer = model["optimizer"]
    assert optimizer["class_path"] == "torch.optim.AdamW"
    assert {name: optimizer["init_args"][name] for name in ("lr", "betas", "weight_decay", "eps")} == {
        "lr": 5e-6, "betas": [0.9, 0.99], "weight_decay": 0.1, "eps": 2.5e-9}
    assert grpo["max_grad_norm"] == 0.025
    # The learning rate of each of the 250 updates: the paper's per-iteration warm-up over
    # 18 % of 1000 iterations from 0 gives update n the factor min(n / 45, 1).
    scheduler = model["lr_scheduler"]
    assert scheduler["class_path"] == "torch.optim.lr_scheduler.LinearLR"
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=5e-6)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, **scheduler["init_args"])
    rates = []
    for _ in range(trainer["max_steps"]):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [5e-6 * min(update / 45, 1.0) for update in range(1, 251)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-15)


class _ParserBuilt(Exception):
    pass


class _ParserOnly(MoTGRPOCLI):
    """The CLI up to its parser: stops before parsing anything."""

    def parse_arguments(self, parser, args):
        raise _ParserBuilt(parser)


def fit_parser():
    """The parser of `python main.py fit`, built in-process as `main` builds it."""
    with pytest.raises(_ParserBuilt) as built:
        _ParserOnly(MoTGRPOModule, ReasoningGymDataModule, args=[])
    return built.value.args[0]._subcommands_action._name_parser_map["fit"]


def all_subclasses(cls):
    return [sub for direct in cls.__subclasses__() for sub in (direct, *all_subclasses(direct))]


SPHINX_MARKUP = re.compile(r":[a-z]+:`|``")  # a role such as :func:`x`, or reST's ``literal``


def test_every_option_has_its_own_help_line_in_plain_words():
    """Issue 12: every option of the module, the data module, the reward and every rule (each
    rule's own `--model.mixture.help` page) has help text, and no Sphinx markup leaks into it."""
    from jsonargparse import ArgumentParser

    from motg_lightning.lightning.data import TaskSpec
    from motg_lightning.rules import REGISTRY
    from motg_lightning.rules.base import MixtureRule
    from motg_lightning.rewards.scoring import RewardFunction

    parser = fit_parser()
    options = {action.dest: action.help for action in parser._actions
               if action.dest.startswith(("model.", "data.")) and not action.dest.endswith(".help")}
    titles = [group.title for group in parser._action_groups if group.title and group.title.startswith(("GRPO", "Reasoning-Gym"))]
    assert len(titles) == 2 and {"model.grpo.max_grad_norm", "data.batch_size"} <= set(options)
    nested = [(rule, "model.mixture") for rule in all_subclasses(MixtureRule)]
    for cls, key in [*nested, (RewardFunction, "model.reward"), (TaskSpec, "data.tasks")]:
        own = ArgumentParser()
        own.add_class_arguments(cls, key)
        options.update({f"{action.dest} ({cls.__name__})": action.help for action in own._actions if action.dest.startswith(key)})
        titles += [group.title for group in own._action_groups if group.title not in ("options", "positional arguments")]
    assert {"model.mixture.top_p (Nucleus)", "model.mixture.gumbel_temperature (Gumbel)", "data.tasks.weight (TaskSpec)"} <= set(options)
    assert not [name for name, text in options.items() if not (text or "").strip()], "options without help"
    assert not {name: text for name, text in options.items() if SPHINX_MARKUP.search(text)}, "Sphinx markup in help"
    assert not [title for title in titles if SPHINX_MARKUP.search(title)], "Sphinx markup in a class's help title"

    mixture_help = re.search(r"--model\.mixture MIXTURE\n(.*?)\n  --", parser.format_help(), re.S).group(1)
    listed = " ".join(mixture_help.split())
    for rule in (entry.rule.__name__ for entry in REGISTRY.values()):
        assert f".{rule}," in listed or f".{rule})" in listed, f"{rule} is not listed under --model.mixture"


def test_help_offers_the_subcommands_predict_included(capsys):
    """Issue 15: `predict` is offered, with its `predict_step` (tests/test_predict.py)."""
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    subcommands = capsys.readouterr().out.split("Available subcommands:")[1]
    assert {"fit", "validate", "test", "predict"} <= set(re.findall(r"^    (\w+)", subcommands, re.M))


def test_a_refused_setting_ends_the_command_line_with_its_message_and_status_2():
    """Issue 12: `python main.py` prints a setting refused with its field named as argparse
    prints a malformed flag: no traceback, the message as the last line, exit status 2."""
    result = subprocess.run(
        [sys.executable, "main.py", "fit", "--config", SMOKE, "--model.mixture.k=0"], cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.mixture.k=0: the support size must be at least 1"), last


def test_other_errors_keep_their_traceback(monkeypatch):
    def broken(args=None):
        raise RuntimeError("a bug, not a setting")

    monkeypatch.setattr("motg_lightning.lightning.cli.main", broken)
    with pytest.raises(RuntimeError, match="a bug, not a setting"):
        command_line([])


def test_progress_bar_counts_optimizer_steps_of_max_steps_from_the_resumed_step(tmp_path, capsys):
    """Issue 12: the training bar counts steps out of trainer.max_steps (not batches of an epoch
    out of -2), 2/4 → 4/4 after resuming at step 2, with a step rate; Rich's bar (Lightning's
    default where rich is installed) and TQDM's alike; enable_progress_bar=false keeps it off."""
    from motg_lightning.lightning.progress import StepTQDMProgressBar
    from motg_lightning.lightning.rich_progress import StepRichProgressBar

    quiet = fit(tmp_path / "first", "--trainer.limit_val_batches=0")  # smoke.yaml turns the bar off
    assert quiet.trainer.progress_bar_callback is None
    checkpoint = next((tmp_path / "first").rglob("*.ckpt"))
    resume = ["--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=true", "--trainer.max_steps=4", f"--ckpt_path={checkpoint}"]

    rich = fit(tmp_path / "rich", *resume).trainer.progress_bar_callback
    assert isinstance(rich, StepRichProgressBar)
    task = rich.progress.tasks[rich.train_progress_bar_id]
    assert (task.fields["initial"], task.completed, task.total) == (2, 4, 4)
    assert re.search(r"4/4 .*s/step|4/4 .*step/s", capsys.readouterr().out)

    tqdm = fit(tmp_path / "tqdm", *resume, "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar").trainer
    bar = tqdm.progress_bar_callback
    assert isinstance(bar, StepTQDMProgressBar)
    assert (bar.train_progress_bar.initial, bar.train_progress_bar.n, bar.train_progress_bar.total) == (2, 4, 4)
    shown = capsys.readouterr().out
    assert re.search(r"2/4 ", shown) and re.search(r"4/4 .*(s/step|step/s)", shown), shown[-2000:]


def _resolved_mixture(*args):
    """``model.mixture`` as `python main.py fit ARGS --print_config` prints it: parsed by the same
    parser, in this process (paths relative to the repository, as the README writes them)."""
    import yaml

    parser = fit_parser()
    config = parser.parse_args([str(ROOT / a) if a.startswith("configs/") else a for a in args])
    return yaml.safe_load(parser.dump(config))["model"]["mixture"]


def _constructor_defaults(class_path):
    import importlib
    import inspect

    module, name = class_path.rsplit(".", 1)
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    return {key: p.default for key, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _sets_a_rule(path) -> bool:
    import yaml

    return "mixture" in yaml.safe_load(path.read_text())["model"]


@pytest.mark.parametrize("method", [p for p in METHOD_CONFIGS if _sets_a_rule(p)], ids=lambda path: path.stem)
def test_a_method_overlay_gives_its_rule_and_inherits_nothing_from_the_default_rule(method):
    """Over default.yaml's Dirichlet, each overlay resolves to its class's own defaults plus what
    the overlay sets: no init_arg of the previous rule leaks in."""
    import yaml

    configured = yaml.safe_load(method.read_text())["model"]["mixture"]
    resolved = _resolved_mixture("--config", "configs/default.yaml", "--config", str(method))
    assert resolved["class_path"] == configured["class_path"]
    assert resolved["init_args"] == {**_constructor_defaults(configured["class_path"]), **configured["init_args"]}


def test_the_readme_rule_examples_resolve_to_the_rules_its_table_documents():
    """Every `python main.py fit ... --config configs/methods/...` line of the README, through
    the fit parser (what --print_config prints): the rule is its class's defaults plus its overlay plus the line's own flags
    (so the Sampled example trains with the weighted likelihood the table lists)."""
    import shlex

    import yaml

    lines = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()]
    examples = [line for line in lines if line.startswith("python main.py fit") and "configs/methods/" in line]
    assert examples
    for example in examples:
        arguments = [a for a in shlex.split(example)[3:] if "<" not in a]
        overlays = [arguments[i + 1] for i, a in enumerate(arguments) if a == "--config" and "methods/" in arguments[i + 1]]
        configured = yaml.safe_load((ROOT / overlays[-1]).read_text())["model"]["mixture"]
        flags = {a.split("=")[0].rsplit(".", 1)[1]: yaml.safe_load(a.split("=", 1)[1])
                 for a in arguments if a.startswith("--model.mixture.")}
        resolved = _resolved_mixture(*arguments)
        assert resolved["init_args"] == {**_constructor_defaults(configured["class_path"]), **configured["init_args"], **flags}
    sampled = _resolved_mixture("--config", "configs/default.yaml", "--config", "configs/methods/sampled.yaml")
    assert sampled["init_args"]["likelihood"] == "weighted"
