"""The registry of trainable rules agrees with the rule classes, the method overlays and the README."""

import inspect
import re
from pathlib import Path
from typing import get_args

import pytest
import yaml

import motg_lightning.rules as rules
from motg_lightning.rules import REGISTRY, Greedy, MixtureRule
from motg_lightning.rules.base import Likelihood

ROOT = Path(__file__).resolve().parents[1]
REGISTERED = {entry.rule for entry in REGISTRY.values()}


def test_every_exported_rule_is_registered_except_greedy_for_evaluation():
    exported = {value for value in vars(rules).values()
                if inspect.isclass(value) and issubclass(value, MixtureRule) and value is not MixtureRule}
    assert exported - REGISTERED == {Greedy}
    assert REGISTERED <= exported


@pytest.mark.parametrize("entry", REGISTRY.values(), ids=lambda entry: entry.name)
def test_an_entry_gives_its_rule_s_default_likelihood_and_cites_its_paper(entry):
    assert entry.rule().likelihood == entry.likelihood
    assert set(entry.rule.LIKELIHOODS) <= set(get_args(Likelihood))
    assert re.fullmatch(r"\d{4}\.\d{5}", entry.arxiv)
    assert entry.arxiv in inspect.getsource(inspect.getmodule(entry.rule))


def overlay_mixtures() -> dict[str, dict]:
    """``model.mixture`` of every overlay in ``configs/methods/`` that sets one, by file name."""
    overlays = {path.name: yaml.safe_load(path.read_text()) for path in (ROOT / "configs" / "methods").glob("*.yaml")}
    return {name: config["model"]["mixture"] for name, config in overlays.items() if "mixture" in config.get("model", {})}


def test_every_overlay_names_a_registered_rule_and_every_registered_overlay_is_its_rule_s():
    mixtures = overlay_mixtures()
    registered_paths = {f"motg_lightning.rules.{rule.__name__}" for rule in REGISTERED}
    assert {name: m["class_path"] for name, m in mixtures.items() if m["class_path"] not in registered_paths} == {}
    for entry in REGISTRY.values():
        if entry.overlay is None:
            continue
        assert entry.overlay in mixtures, f"{entry.name}: configs/methods/{entry.overlay} is missing or sets no mixture"
        mixture = mixtures[entry.overlay]
        assert mixture["class_path"] == f"motg_lightning.rules.{entry.rule.__name__}"
        assert mixture.get("init_args", {}).get("likelihood", entry.likelihood) == entry.likelihood


def readme_rule_rows() -> list[list[str]]:
    """Cells of the rows of the README's rules table (the one whose first header is ``class``)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| class |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_readme_table_lists_exactly_the_registered_rules_with_their_sources_and_overlays():
    rows = readme_rule_rows()
    classes = [re.match(r"`rules\.(\w+)`", row[0]).group(1) for row in rows]
    assert set(classes) == {rule.__name__ for rule in REGISTERED}
    for entry in REGISTRY.values():
        first = rows[classes.index(entry.rule.__name__)]  # a rule's first row is its default settings
        assert entry.arxiv in first[4], f"{entry.name}: the README's source should cite arXiv {entry.arxiv}"
        assert first[5] == (f"`{entry.overlay}`" if entry.overlay else ""), entry.name
