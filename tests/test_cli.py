"""The command line as a user runs it: a multirun that shares originals and golds, and clear config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=3", "logger=none"]


def train(tmp_path, *args, timeout=300):
    return subprocess.run([sys.executable, "train.py", *args, f"paths.cache_dir={tmp_path / 'cache'}"],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_multirun_trains_one_original_and_one_gold_per_seed(tmp_path):
    sweep = tmp_path / "sweep"
    out = train(tmp_path, "-m", "unlearner=none,finetune,gradient_ascent", "seed=0,1", *SMALL,
                f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert len(results) == 6
    for stage in ("original", "gold"):
        trained = [r["config"]["seed"] for r in results if not r["stages"][stage]["cache_hit"]]
        assert sorted(trained) == [0, 1], stage  # one per seed; the other four jobs reuse them
    assert out.stdout.count("loaded from the stage cache") + out.stderr.count("loaded from the stage cache") == 8


def test_config_error_exits_nonzero_before_training(tmp_path):
    run_dir = tmp_path / "run"
    out = train(tmp_path, "forget.fraction=1.5", *SMALL, f"hydra.run.dir={run_dir}")
    assert out.returncode == 2
    assert "forget.fraction=1.5 is out of range: it must be > 0 and < 1" in out.stdout + out.stderr
    assert not (run_dir / "results.json").exists() and not (tmp_path / "cache").exists()


def test_unknown_option_lists_the_choices(tmp_path):
    out = train(tmp_path, "unlearner=finetun")
    assert out.returncode != 0
    assert "finetun" in out.stderr and "gradient_ascent" in out.stderr and "finetune" in out.stderr


def test_a_run_directory_in_use_by_another_run_is_refused_before_hydra_writes_there(tmp_path):
    """Issue 24: two runs started into one run directory both exited 0, one's results lost, logs mixed."""
    from filelock import FileLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".run.lock.holder").write_text("pid 1 on host elsewhere\n")
    with FileLock(str(run_dir / ".run.lock")):
        out = train(tmp_path, *SMALL, f"hydra.run.dir={run_dir}", timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text, text[-2000:]
    assert f"error: hydra.run.dir={run_dir} is in use by another run (pid 1 on host elsewhere)" in text
    assert sorted(p.name for p in run_dir.iterdir()) == [".run.lock", ".run.lock.holder"]  # nothing of Hydra's


def test_the_lock_of_a_run_directory_is_taken_once_per_process_and_released(tmp_path):
    from mu_lightning.files import lock_run_dir, unlock_run_dir

    lock_run_dir(tmp_path / "run")
    lock_run_dir(tmp_path / "run")  # the guard, then execute: the same process
    probe = subprocess.run([sys.executable, "-c", "from mu_lightning.files import lock_run_dir; import sys; "
                            "lock_run_dir(sys.argv[1])", str(tmp_path / "run")], capture_output=True, text=True,
                           cwd=ROOT)
    assert probe.returncode != 0 and "is in use by another run (pid" in probe.stderr
    unlock_run_dir(tmp_path / "run")
    lock_run_dir(tmp_path / "run")
    unlock_run_dir(tmp_path / "run")
