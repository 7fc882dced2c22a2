"""Faults: kills, concurrent jobs, divergence, a failing disk, Ctrl-C, reruns into a used run directory and failing
sweep jobs. Those with real processes are in the slow tier."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mu_lightning.cache import StageCache

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "logger=none", "unlearner=none"]


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_kill_during_training_then_rerun_trains_again(tmp_path):
    cache = tmp_path / "cache"
    # ~2,000 steps: long enough to be killed mid-training, short enough to rerun
    args = [sys.executable, "train.py", "dataset=synthetic", "dataset.source.num_samples=6000", "logger=none",
            "unlearner=none", "train.epochs=30",
            f"paths.cache_dir={cache}"]
    proc = subprocess.Popen([*args, f"hydra.run.dir={tmp_path / 'killed'}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: list(cache.glob("original-*.lock"))), "training never started"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(cache.glob("*.json")) and not list(cache.glob("*.pt"))  # nothing that looks like an entry
    assert not (tmp_path / "killed" / "results.json").exists()
    rerun = subprocess.run([*args, f"hydra.run.dir={tmp_path / 'rerun'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    res = json.loads((tmp_path / "rerun" / "results.json").read_text())
    assert not res["stages"]["original"]["cache_hit"]


SLOW_WRITER = textwrap.dedent("""
    import sys, time, torch
    from mu_lightning.cache import StageCache
    real_save = torch.save
    def stalled_save(obj, f):  # the bytes are written, the rename has not happened yet
        real_save(obj, f); f.flush(); print("written", flush=True); time.sleep(120)
    torch.save = stalled_save
    StageCache(sys.argv[1]).get_or_train("gold", "k", lambda: ({"w": torch.ones(1000)}, {"steps": 1}))
""")


@pytest.mark.slow
def test_kill_during_cache_write_leaves_no_valid_entry(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".gold-k.pt.*.tmp"))  # the partial write is there ...
    cache = StageCache(tmp_path)
    assert cache.load("gold", "k") is None  # ... and is not an entry
    calls = []
    _, _, hit = cache.get_or_train("gold", "k", lambda: (calls.append(1) or {"w": __import__("torch").zeros(2)}, {}))
    assert not hit and calls == [1] and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


CONCURRENT = textwrap.dedent("""
    import json, os, sys, time, torch
    from mu_lightning.cache import StageCache
    def train():
        with open(sys.argv[2], "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(3)
        return {"w": torch.arange(4.0)}, {"by": os.getpid()}
    state, meta, hit = StageCache(sys.argv[1]).get_or_train("original", "same-key", train)
    print(json.dumps({"hit": hit, "by": meta["by"], "w": state["w"].tolist()}))
""")


@pytest.mark.slow
def test_two_processes_one_key_train_once(tmp_path):
    trained_log = tmp_path / "trained.txt"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path / "cache"), str(trained_log)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert len(trained_log.read_text().split()) == 1  # one trained ...
    assert sorted(o["hit"] for o in outs) == [False, True]  # ... the other waited and reused it
    assert outs[0]["by"] == outs[1]["by"] and outs[0]["w"] == outs[1]["w"] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.slow
def test_divergence_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "train.py", "-m", *SMALL[:-1], "train.epochs=5", "unlearner=gradient_ascent",
         "unlearner.grad_clip=null", "unlearner.optimizer.lr=1e9,0.01", f"paths.cache_dir={tmp_path / 'cache'}",
         f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {r["config"]["unlearner"]["optimizer"]["lr"]: r
            for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))}
    assert set(runs) == {1e9, 0.01}
    blown = runs[1e9]["stages"]["unlearn"]
    assert blown["diverged"] is True and blown["diverged_step"] >= 1
    assert all(v is None or math.isfinite(v) for v in runs[1e9]["metrics"].values())  # the last finite weights
    assert runs[0.01]["stages"]["unlearn"]["diverged"] is False


@pytest.mark.slow
def test_full_disk_on_results_keeps_the_cache_valid(tmp_path, monkeypatch):
    from mu_lightning import outputs, pipeline
    from tests.helpers import compose_cfg

    real = outputs.atomic_write

    def failing(path, write):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, write)

    monkeypatch.setattr(outputs, "atomic_write", failing)
    cfg = compose_cfg(tmp_path, ["unlearner=none"])
    with pytest.raises(OSError, match="No space left"):
        pipeline.run(cfg)
    assert not (tmp_path / "run" / "results.json").exists()
    cache = StageCache(tmp_path / "cache")
    entries = sorted(p.stem for p in (tmp_path / "cache").glob("*.json"))
    assert len(entries) == 2 and all(cache.load(*e.split("-", 1)) is not None for e in entries)


def _train_py(*args, timeout=600):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_a_full_disk_under_torch_save_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save words a failed write as its own RuntimeError; the run reports ENOSPC on the file instead."""
    import shutil

    import torch

    from mu_lightning import files

    def failing_save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(OSError, match="No space left on device") as err:
        files.atomic_write(tmp_path / "logits.pt", lambda f: torch.save({}, f))
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "logits.pt")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_a_successful_rerun_sets_the_earlier_outputs_aside(run_pipeline, tmp_path):
    quick = ("unlearner=none", "callbacks.forget_retain=null")
    first = run_pipeline(*quick, "save_unlearned=true", out="run", shared_cache=True)
    run_pipeline(*quick, "unlearn_seed=1", out="run", shared_cache=True)
    run_dir = tmp_path / "run"
    assert not (run_dir / "unlearned.pt").exists()  # the first run's weights are not beside the second's results
    assert json.loads((run_dir / "results.json").read_text())["config"]["unlearn_seed"] == 1
    earlier = json.loads((run_dir / "previous" / "results.json").read_text())
    assert earlier["metrics"] == first["metrics"] and (run_dir / "previous" / "unlearned.pt").exists()
    run_pipeline(*quick, "unlearn_seed=2", out="run", shared_cache=True)  # a third run keeps both, nested
    assert json.loads((run_dir / "previous" / "previous" / "results.json").read_text())["config"]["unlearn_seed"] == 0


def test_a_failed_rerun_leaves_no_earlier_results_beside_its_files(run_pipeline, tmp_path):
    from mu_lightning.errors import RunFault

    run_pipeline("unlearner=none", "callbacks.forget_retain=null", out="run", shared_cache=True)
    with pytest.raises(RunFault, match=r"training the original model diverged at step \d+ .*lower "
                                       r"train.optimizer.lr \(now 1000000000.0\) or set train.grad_clip"):
        run_pipeline("unlearner=none", "train.optimizer.lr=1e9", out="run")
    run_dir = tmp_path / "run"
    assert (run_dir / "forget_ids.txt").exists() and not (run_dir / "results.json").exists()
    assert (run_dir / "previous" / "results.json").exists() and (run_dir / "previous" / "forget_ids.txt").exists()
    assert not list((tmp_path / "cache").glob("*.json"))  # the diverged model was not stored (own cache dir)


@pytest.mark.slow
def test_divergence_of_the_original_is_one_message_and_exit_code_1(tmp_path):
    out = _train_py(*SMALL, "train.optimizer.lr=1e9", f"paths.cache_dir={tmp_path / 'cache'}",
                    f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    assert "error: training the original model diverged" in out.stderr + out.stdout
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "message", "logger"), [
    (signal.SIGINT, 130, "error: interrupted (Ctrl-C)", "csv"),
    (signal.SIGTERM, 143, "error: interrupted (SIGTERM): no results.json was written", "none"),  # kill, a scheduler
])
def test_an_interrupt_is_one_message_and_its_exit_code(tmp_path, sig, code, message, logger):
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "train.py", "dataset=synthetic", "dataset.source.num_samples=6000",
                             f"logger={logger}", "unlearner=none", "train.epochs=300", f"paths.cache_dir={cache}",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: list(cache.glob("original-*.lock"))), "training never started"
    time.sleep(1.0)
    proc.send_signal(sig)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, text[-2000:]
    assert message in text and "Traceback" not in text
    assert not (tmp_path / "run" / "results.json").exists() and not list(cache.glob("*.json"))


@pytest.mark.slow
def test_a_run_dir_that_is_a_file_is_refused_before_hydra_starts(tmp_path):
    (tmp_path / "afile").write_text("x")
    out = _train_py(*SMALL, f"hydra.run.dir={tmp_path / 'afile'}", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"error: hydra.run.dir={tmp_path / 'afile'} is not writable" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_failing_sweep_job_keeps_the_summary_and_exits_non_zero(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    out = _train_py("-m", *SMALL, "train.epochs=2", "forget.fraction=2.0,0.1,0.2", f"hydra/launcher={launcher}",
                    f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}")
    assert out.returncode != 0
    summary = (sweep / "summary.md").read_text()
    assert "fraction=0.1" in summary and "fraction=0.2" in summary  # the other jobs' rows ...
    assert f"{sweep / '0'}: no results.json (failed or unfinished job)" in summary  # ... and a note for the failed
