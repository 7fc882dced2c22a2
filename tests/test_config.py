"""Every option of every config group composes, and the CLI lists them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"hydra", "__pycache__"})
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


def test_groups_are_the_documented_ones():
    assert {"dataset", "model", "forget", "unlearner", "trainer", "logger", "paths", "metric", "experiment"} <= set(
        GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(tmp_path, group, option):
    if group == "hparams_search":  # its presets select the Optuna sweeper: the [hpo] extra
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_cfg(tmp_path, [f"{group}={option}"], fast=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group in ("experiment", "hparams_search"):  # presets of the global package: no node of their own
        return
    assert resolved[group] is not None or option == "none"


def test_dataset_facts_reach_the_model_by_interpolation(tmp_path):
    cfg = compose_cfg(tmp_path, ["dataset=synthetic", "dataset.input_shape=[1,4,4]", "dataset.num_classes=5"])
    assert list(cfg.model.input_shape) == [1, 4, 4] and cfg.model.num_classes == 5
    net = instantiate(cfg.model)
    assert net(__import__("torch").zeros(2, 1, 4, 4)).shape == (2, 5)


def test_help_lists_every_group_and_option():
    out = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, timeout=120,
                         cwd=CONF.parent)
    assert out.returncode == 0, out.stderr
    for group, option in OPTIONS:
        if group != "experiment":
            assert f"{group}: " in out.stdout and option in out.stdout, (group, option)
