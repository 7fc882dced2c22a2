"""Resuming a killed training of the original or gold model (train.checkpoint_every, docs/checkpoints.md): the
resumed run ends with the weights of an uninterrupted one, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from mu_lightning.pipeline import run
from mu_lightning.stages import ClassifierModule
from mu_lightning.stages.classifier import resumable
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ["unlearner=none", "train.epochs=7", "train.checkpoint_every=2", "callbacks=none"]


def entries(cache: Path, stage: str) -> dict[str, torch.Tensor]:
    (weights,) = cache.glob(f"{stage}-*.pt")
    return torch.load(weights, weights_only=True)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def straight_then_killed(tmp_path: Path, monkeypatch):
    """The original trained uninterrupted into ``straight/``, then again into ``resumed/``, killed after its 5th
    epoch (its last checkpoint: after the 4th); returns that run's config and the real end-of-epoch hook."""
    cfg = compose_cfg(tmp_path, RECIPE)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "straight")
    run(cfg)  # uninterrupted
    end_of_epoch = ClassifierModule.on_train_epoch_end

    def dies_after_epoch_5(self):
        end_of_epoch(self)
        if self.current_epoch == 4:
            raise RuntimeError("killed")

    monkeypatch.setattr(ClassifierModule, "on_train_epoch_end", dies_after_epoch_5)
    cfg = compose_cfg(tmp_path, RECIPE)
    with open_dict(cfg):
        cfg.paths.cache_dir, cfg.paths.output_dir = str(tmp_path / "resumed"), str(tmp_path / "run2")
    with pytest.raises(RuntimeError, match="killed"):
        run(cfg)
    return cfg, end_of_epoch


def test_a_training_that_failed_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    cfg, end_of_epoch = straight_then_killed(tmp_path, monkeypatch)
    (work,) = (tmp_path / "resumed" / "work").iterdir()
    assert torch.load(work / "last.ckpt", weights_only=True)["epoch"] == 3  # epochs 0-3 done: saved after the 4th
    monkeypatch.setattr(ClassifierModule, "on_train_epoch_end", end_of_epoch)
    run(cfg)
    assert_same_weights(entries(tmp_path / "straight", "original"), entries(tmp_path / "resumed", "original"))
    assert not list((tmp_path / "resumed" / "work").iterdir())  # the stored entry replaced its checkpoints


def _record(cache: Path, stage: str) -> dict:
    (record,) = cache.glob(f"{stage}-*.json")
    return json.loads(record.read_text())["meta"]


def test_a_resumed_fit_counts_the_flops_and_seconds_of_the_part_before_the_interruption(tmp_path, monkeypatch):
    """Issue 24: a resumed training recorded only the resumed part's FLOPs, so flop_speedup came out halved."""
    cfg, end_of_epoch = straight_then_killed(tmp_path, monkeypatch)
    (work,) = (tmp_path / "resumed" / "work").iterdir()
    saved = torch.load(work / "last.ckpt", weights_only=True)["mu_lightning"]
    assert saved["bound"] == work.name and saved["cost"]["flops"] > 0 and saved["cost"]["seconds"] > 0
    shutil.copy(work / "last.ckpt", tmp_path / "original.ckpt")
    monkeypatch.setattr(ClassifierModule, "on_train_epoch_end", end_of_epoch)
    run(cfg)
    straight, resumed = _record(tmp_path / "straight", "original"), _record(tmp_path / "resumed", "original")
    assert resumed["flops"] == straight["flops"] and resumed["grad_evals"] == straight["grad_evals"]
    assert resumed["steps"] == straight["steps"]
    assert resumed["fit_seconds"] >= saved["cost"]["seconds"]


def _module(tmp_path: Path) -> ClassifierModule:
    from hydra.utils import instantiate

    cfg = compose_cfg(tmp_path, RECIPE)
    return instantiate(cfg.train, model=instantiate(cfg.model))


def test_a_resume_checkpoint_of_another_entry_or_a_damaged_one_is_not_used(tmp_path, caplog):
    """Issue 24: the original's checkpoint placed in the gold's work area became the gold entry."""
    module = _module(tmp_path)
    state = {"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}, "epoch": 3,
             "mu_lightning": {"bound": "original-0123", "cost": {"flops": 1, "grad_evals": 1, "seconds": 1.0}}}
    gold = tmp_path / "work" / "gold-4567"
    gold.mkdir(parents=True)
    torch.save(state, gold / "last.ckpt")
    with caplog.at_level("WARNING"):
        callbacks, resume_from = resumable(module, gold)
    assert resume_from is None and callbacks and not (gold / "last.ckpt").exists()
    assert f"resume checkpoint {gold / 'last.ckpt'} is not used (it belongs to original-0123, not gold-4567)" \
        in caplog.text
    (gold / "last.ckpt").write_bytes(b"PK\x03\x04 damaged")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert resumable(module, gold)[1] is None
    assert f"{gold / 'last.ckpt'} is not used (it could not be read" in caplog.text
    torch.save({**state, "mu_lightning": {**state["mu_lightning"], "bound": "gold-4567"}}, gold / "last.ckpt")
    assert resumable(module, gold)[1] == str(gold / "last.ckpt")
    nan = {k: torch.full_like(v, float("nan")) for k, v in state["state_dict"].items()}
    torch.save({**state, "state_dict": nan, "mu_lightning": {**state["mu_lightning"], "bound": "gold-4567"}},
               gold / "last.ckpt")
    assert resumable(module, gold)[1] is None


def test_checkpoint_every_does_not_change_the_cache_key(tmp_path):
    from mu_lightning.pipeline import build_data, stage_key

    keys = set()
    for every in ("null", "3"):
        cfg = compose_cfg(tmp_path, [f"train.checkpoint_every={every}"])
        keys.add(stage_key(cfg, build_data(cfg), "original", 0))
    assert len(keys) == 1


@pytest.mark.slow
def test_kill_9_mid_training_then_the_same_command_ends_with_the_uninterrupted_weights(tmp_path):
    args = [sys.executable, "train.py", "dataset=synthetic", "dataset.source.num_samples=600", "logger=none",
            "unlearner=none", "train.epochs=30", "train.checkpoint_every=3", "callbacks=none"]

    def train(cache: str, out: str) -> subprocess.Popen:
        return subprocess.Popen([*args, f"paths.cache_dir={tmp_path / cache}", f"hydra.run.dir={tmp_path / out}"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    assert train("straight", "a").wait(timeout=600) == 0
    victim = train("killed", "b")
    deadline = time.monotonic() + 600
    while not list((tmp_path / "killed").glob("work/original-*/last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "b" / "results.json").exists() and not list((tmp_path / "killed").glob("original-*.pt"))
    assert train("killed", "c").wait(timeout=600) == 0  # the same command again
    for stage in ("original", "gold"):
        assert_same_weights(entries(tmp_path / "straight", stage), entries(tmp_path / "killed", stage))
