"""Hydra launchers: joblib sweeps share one original and one gold through the stage cache; the SLURM config composes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from mu_lightning import distributed
from mu_lightning.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=3", "logger=none"]


def hydra_cfg(*overrides: str):
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_joblib_launcher_composes():
    assert hydra_cfg("hydra/launcher=joblib").hydra.launcher._target_.endswith("JoblibLauncher")


def test_slurm_config_composes_over_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.tasks_per_node, launcher.gpus_per_node, launcher.timeout_min) == (
        "gpu", 1, 1, 240)


def test_ddp_jobs_are_not_run_side_by_side_by_joblib(tmp_path):
    cfg = hydra_cfg("hydra/launcher=joblib", "trainer=ddp_cpu")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(ConfigError, match="trainer.strategy=ddp with hydra/launcher=joblib would run several DDP"):
        distributed.launch(cfg)


@pytest.mark.slow
def test_joblib_sweep_of_four_jobs_shares_one_original_and_one_gold(tmp_path):
    """Two workers start together and want the same original: one trains it under the key lock, the other waits."""
    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=joblib",
                          "hydra.launcher.n_jobs=2", "unlearner=none,finetune,gradient_ascent,random_label", *SMALL,
                          f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert len(results) == 4
    for stage in ("original", "gold"):
        assert sum(not r["stages"][stage]["cache_hit"] for r in results) == 1, stage
        assert len({r["stages"][stage]["cache_key"] for r in results}) == 1
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.pt")) == ["gold", "original"]
    reference = results[0]["metrics"]
    for r in results[1:]:  # every job evaluated the very same original and gold
        assert all(r["metrics"][f"{m}/{k}"] == reference[f"{m}/{k}"] for m in ("original", "gold")
                   for k in ("forget_acc", "retain_acc", "test_acc"))
