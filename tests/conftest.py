"""Shared fixtures: compose the real Hydra config with overrides, with outputs and cache in a temp dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Small and fast: synthetic data, few epochs. Tests add their own overrides after these.
FAST = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=8", "logger=none"]


def compose_cfg(tmp_path: Path, overrides: list[str] = (), fast: bool = True) -> DictConfig:
    """The config ``python train.py <overrides>`` would run, writing into ``tmp_path/run`` and ``tmp_path/cache``."""
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*(FAST if fast else []), *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    given = {o.split("=", 1)[0] for o in overrides}
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        for key, default in (("output_dir", tmp_path / "run"), ("cache_dir", tmp_path / "cache")):
            if f"paths.{key}" not in given:
                cfg.paths[key] = str(default)
        del cfg.hydra
    return cfg


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """A stage cache shared by every test of the session: originals and golds are trained once per config."""
    return tmp_path_factory.mktemp("stage-cache")


@pytest.fixture
def run_pipeline(tmp_path, session_cache):
    """``run_pipeline(*overrides)`` runs the whole pipeline in-process and returns the results.json contents.

    ``shared_cache=True`` uses the session-wide stage cache (for tests that do not check cache behaviour).
    """
    from mu_lightning.pipeline import run

    def _run(*overrides: str, fast: bool = True, out: str = "run", shared_cache: bool = False) -> dict:
        cfg = compose_cfg(tmp_path, list(overrides), fast=fast)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / out)
            if shared_cache:
                cfg.paths.cache_dir = str(session_cache)
        run(cfg)
        return json.loads((tmp_path / out / "results.json").read_text())

    return _run


def make_data(tmp_path: Path, *overrides: str):
    """The set-up UnlearningDataModule that ``python train.py <overrides>`` would build."""
    from hydra.utils import instantiate

    from mu_lightning.data import UnlearningDataModule

    cfg = compose_cfg(tmp_path, list(overrides), fast=False)
    data = UnlearningDataModule(source=instantiate(cfg.dataset.source), forget=instantiate(cfg.forget),
                                test_fraction=cfg.dataset.test_fraction, val_fraction=cfg.dataset.val_fraction,
                                split_seed=cfg.dataset.split_seed)
    data.setup()
    return data
