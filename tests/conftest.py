"""Shared fixtures: the whole pipeline run in-process, with outputs and cache in a temp dir. Helpers that are not
fixtures (the composed config, the set-up datamodule) are in ``tests/helpers.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import open_dict

from tests.helpers import compose_cfg

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


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
