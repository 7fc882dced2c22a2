"""Benchmark protocols: every preset selects, for every unlearner, its file
``conf/protocol/<protocol>/<unlearner>.yaml`` (the authors' values, each with its source); the digits data selects
the digits protocol, and data with no protocol (a user's tensor file, the synthetic mixture) keeps the published
defaults of ``conf/unlearner/``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mu_lightning.outputs import protocol_choice
from tests.helpers import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"
UNLEARNERS = sorted(p.stem for p in (CONF / "unlearner").glob("*.yaml"))
PRESETS = {  # the protocol each way of choosing the data selects
    "digits": ["dataset=digits"],
    "cifar10_random10": ["experiment=cifar10_resnet18_random10"],
    "cifar10_class": ["experiment=cifar10_resnet18_class"],
    "cifar100_random10": ["experiment=cifar100_resnet18_random10"],
    "svhn_random10": ["experiment=svhn_resnet18_random10"],
}
VALUE = re.compile(r"^\s*(?P<key>[A-Za-z_]+):\s*(?P<value>\S.*)$")


def leaves(node: dict, prefix: str = "") -> dict:
    """``{dotted key: value}`` of every leaf of a plain nested dict (interpolations unresolved)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unresolved(node) -> dict:
    return OmegaConf.to_container(node, resolve=False)


def test_every_preset_has_a_protocol_whose_files_name_unlearners():
    """A protocol file is written where a paper gives values for the method; a method without one falls back to its
    general values (test_a_preset_without_values_for_a_method_falls_back_and_says_so)."""
    assert sorted(p.name for p in (CONF / "protocol").iterdir()) == sorted(PRESETS)
    for protocol in PRESETS:
        assert {p.stem for p in (CONF / "protocol" / protocol).glob("*.yaml")} <= set(UNLEARNERS), protocol


def test_a_preset_without_values_for_a_method_falls_back_and_says_so(tmp_path, caplog):
    """Hydra's ``optional`` entry skips a missing protocol file: the run records ``general`` and logs why."""
    import logging

    from mu_lightning.outputs import protocol_record

    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=["unlearner=none", "protocol@unlearner=digits/not_there"],
                      return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            with caplog.at_level(logging.INFO, logger="mu_lightning.outputs"):
                record = protocol_record(cfg)
        finally:
            HydraConfig.instance().cfg = None
    assert record == {"protocol": "general", "values_from": ["conf/unlearner/none.yaml"], "command_line": []}
    assert "protocol digits has no values for unlearner=none" in caplog.text


def test_every_preset_selects_its_protocol_last_in_its_defaults():
    """What the composition below checks for each pair, read from the files (composing all 90 pairs takes a minute:
    three presets walk in the slow tier)."""
    for protocol, (choice,) in PRESETS.items():
        if choice.startswith("experiment="):
            preset = OmegaConf.load(CONF / "experiment" / f"{choice.split('=')[1]}.yaml")
            assert preset.defaults[-1] == {"override /protocol@unlearner": f"{protocol}/${{unlearner}}"}


@pytest.mark.parametrize("protocol", [pytest.param(p, marks=[pytest.mark.slow] if p.endswith("random10") else [])
                                      for p in PRESETS])
def test_every_unlearner_of_a_preset_gets_its_protocol_values(tmp_path, protocol):
    """Composed as ``python train.py <preset> unlearner=<u>`` would: where the protocol has a file for the method,
    the choice names it, it sets every option of conf/unlearner/<u>.yaml, and each of its values is the one the run
    gets; where it has none, the run gets the general values (and records ``general``)."""
    for unlearner in UNLEARNERS:
        cfg = compose_cfg(tmp_path, [*PRESETS[protocol], f"unlearner={unlearner}"], fast=False)
        if not (CONF / "protocol" / protocol / f"{unlearner}.yaml").exists():
            assert protocol_choice() is None
            general = leaves(unresolved(OmegaConf.load(CONF / "unlearner" / f"{unlearner}.yaml")))
            assert {k: leaves(unresolved(cfg.unlearner))[k] for k in general} == general, (protocol, unlearner)
            continue
        assert protocol_choice() == f"{protocol}/{unlearner}"
        shipped = unresolved(OmegaConf.load(CONF / "protocol" / protocol / f"{unlearner}.yaml"))
        defaults = unresolved(OmegaConf.load(CONF / "unlearner" / f"{unlearner}.yaml"))
        searched = {k for k in leaves(defaults) if k.startswith("search.")}  # the search space is not a value
        assert set(leaves(defaults)) - {"_target_"} - searched <= set(leaves(shipped)), (protocol, unlearner)
        composed = leaves(unresolved(cfg.unlearner))
        assert {k: composed[k] for k in leaves(shipped)} == leaves(shipped), (protocol, unlearner)


@pytest.mark.parametrize("dataset", ["tensor_file", "synthetic", "cifar10"])
def test_data_without_a_protocol_gets_the_published_defaults(tmp_path, dataset):
    for unlearner in ("scrub", "ssd", "neggrad_plus"):
        cfg = compose_cfg(tmp_path, [f"dataset={dataset}", f"unlearner={unlearner}"], fast=False)
        assert protocol_choice() is None
        defaults = unresolved(OmegaConf.load(CONF / "unlearner" / f"{unlearner}.yaml"))
        assert unresolved(cfg.unlearner) == defaults


def test_a_command_line_value_still_wins_over_the_protocol(tmp_path):
    cfg = compose_cfg(tmp_path, ["experiment=cifar10_resnet18_class", "unlearner=scrub", "unlearner.optimizer.lr=0.1"],
                      fast=False)
    assert cfg.unlearner.optimizer.lr == 0.1 and cfg.unlearner.forget_batch_size == 512


@pytest.mark.parametrize("folder", ["protocol", "unlearner"])
def test_every_shipped_value_says_where_it_comes_from(folder):
    """Each value line of a protocol or default file carries a comment (its source, or that this project chose it);
    ``_target_``/``_partial_`` name code, not values."""
    bare = [f"{path.relative_to(CONF)}: {line.strip()}" for path in sorted((CONF / folder).rglob("*.yaml"))
            for line in path.read_text().splitlines()
            if (m := VALUE.match(line)) and m["key"] not in ("_target_", "_partial_") and "#" not in m["value"]]
    assert not bare, "\n".join(bare)


def test_results_name_the_protocol(run_pipeline):
    assert run_pipeline("dataset=digits", "unlearner=none", fast=False, shared_cache=True)["protocol"] == "digits/none"
    general = run_pipeline("unlearner=none", out="synthetic", shared_cache=True)
    assert general["protocol"] == "general" and general["values_from"] == ["conf/unlearner/none.yaml"]
