"""A rule switched on the command line: options kept from the previous rule are reported."""

import warnings
from pathlib import Path

import pytest

from motg_lightning.lightning.cli import MoTGRPOCLI
from motg_lightning.lightning.data import ReasoningGymDataModule
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.rule_switch import inherited_rule_options, switched_class

ROOT = Path(__file__).resolve().parents[1]
SAMPLED = "motg_lightning.rules.Sampled"


@pytest.mark.parametrize(("args", "expected"), [
    ([f"--model.mixture={SAMPLED}"], (SAMPLED, 1)),
    (["--model.mixture", SAMPLED, "--model.mixture.k=3"], (SAMPLED, 2)),
    (["--model.mixture={class_path: x.Y, init_args: {k: 2}}"], None),
    (["--model.mixture.k=3"], None),
])
def test_the_command_line_switch_is_found(args, expected):
    assert switched_class(args) == expected


def test_only_options_the_command_line_did_not_set_and_that_differ_from_the_defaults_are_reported():
    init_args = {"k": 3, "temperature": 0.9, "likelihood": "representative"}
    args = [f"--model.mixture={SAMPLED}", "--model.mixture.k=3"]
    assert inherited_rule_options(args, SAMPLED, init_args) == {"likelihood": ("representative", "weighted")}
    assert inherited_rule_options([*args, "--model.mixture.likelihood=representative"], SAMPLED, init_args) == {}
    assert inherited_rule_options(["--model.mixture.k=3"], SAMPLED, init_args) == {}


def _cli_warnings(*args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = MoTGRPOCLI(MoTGRPOModule, ReasoningGymDataModule, run=False,
                         args=["--config", str(ROOT / "configs" / "default.yaml"), *args])
    return cli, [str(w.message) for w in caught if str(w.message).startswith("model.mixture=")]


def test_the_cli_warns_when_sampled_inherits_dirichlets_likelihood_and_not_with_the_overlay():
    cli, messages = _cli_warnings(f"--model.mixture={SAMPLED}", "--model.mixture.k=3")
    assert cli.model.mixture.likelihood == "representative"
    assert len(messages) == 1, messages
    assert "likelihood='representative' (its default: 'weighted')" in messages[0]
    assert "--model.mixture.likelihood=weighted" in messages[0]
    cli, messages = _cli_warnings("--config", str(ROOT / "configs" / "methods" / "sampled.yaml"))
    assert cli.model.mixture.likelihood == "weighted" and not messages
