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

from mu_lightning.errors import ConfigError
from mu_lightning.runtime import distributed, threads

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
        distributed.check_strategy(cfg)


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


@pytest.mark.parametrize("overrides, env, expected", [
    ([], {}, None),                                                     # one process: torch's default
    (["trainer=ddp_cpu"], {}, 4),                                       # 2 ranks on 8 cores
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"], {}, 2),      # 4 jobs side by side
    (["hydra/launcher=joblib"], {}, 1),                                 # n_jobs=-1: a job per core
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-3"], {}, 1),     # 6 jobs on 8 cores
    (["trainer=ddp_cpu", "threads=3"], {}, 3),                          # the user's choice
    (["trainer=ddp_cpu"], {"OMP_NUM_THREADS": "2"}, None),              # the user's environment
])
def test_cpu_threads_share_the_cores_among_processes_started_together(monkeypatch, overrides, env, expected):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = hydra_cfg(*overrides)
    HydraConfig.instance().set_config(cfg)
    assert threads.cpu_threads(cfg) == expected


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "true"])
def test_bad_threads_name_the_option(value):
    with pytest.raises(ConfigError, match="threads=.* is not allowed: it must be a positive integer, or null"):
        threads.check_threads(hydra_cfg(f"threads={value}"))


def test_a_run_uses_and_records_its_thread_count(run_pipeline):
    import torch

    before = torch.get_num_threads()
    try:
        res = run_pipeline("threads=1", "unlearner=none", "callbacks.forget_retain=null", shared_cache=True)
        assert torch.get_num_threads() == 1 and res["threads"] == 1
    finally:
        torch.set_num_threads(before)
