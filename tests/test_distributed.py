"""DDP (``trainer=ddp_cpu``: gloo, 2 processes) for every stage, inside a Hydra multirun, against one process."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mu_lightning.errors import ConfigError
from mu_lightning.runtime import distributed
from mu_lightning.runtime.checks import check_config
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
# Even set sizes (train 432, forget 44, retain 388) and half the batch per rank: every global DDP batch is then the
# single-process batch of 64 (rank r takes the positions of parity r of the same permutation), so the two runs
# differ only in floating-point reduction order.
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=4", "logger=none", "forget.count=44"]
HALF_BATCH = ["train.batch_size=32", "unlearner.batch_size=32"]
FULL_BATCH = ["train.batch_size=64", "unlearner.batch_size=64"]  # one process, the same global batches as HALF_BATCH


def test_ddp_configs_compose(tmp_path):
    gpu = compose_cfg(tmp_path, ["trainer=ddp"]).trainer
    assert (gpu.accelerator, gpu.strategy, gpu.devices, gpu.deterministic) == ("gpu", "ddp", -1, False)
    cpu = compose_cfg(tmp_path, ["trainer=ddp_cpu"]).trainer
    assert (cpu.accelerator, cpu.strategy, cpu.devices, cpu.deterministic) == ("cpu", "ddp", 2, True)


def test_spawning_strategies_are_refused(tmp_path):
    cfg = compose_cfg(tmp_path, ["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"])
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_spawn is not supported.*trainer=ddp_cpu"):
        distributed.check_strategy(cfg)


def test_ddp_needs_the_command_line(tmp_path):
    """In-process there is no command to run again for rank 1: a clear error, not a second pytest."""
    cfg = compose_cfg(tmp_path, ["trainer=ddp_cpu"])
    with pytest.raises(ConfigError, match="run it as python train.py trainer=ddp"):
        check_config(cfg)  # the pre-flight checks include the strategy's


def test_one_process_keeps_cache_keys_and_cache(tmp_path):
    assert distributed.key_extra() == {} and distributed.is_main()
    calls = []

    class Cache:
        def get_or_train(self, stage, key, train):
            calls.append((stage, key))
            return (*train(), False)

    assert distributed.get_or_train(Cache(), "gold", "k", lambda: ({}, {"steps": 1})) == ({}, {"steps": 1}, False)
    assert calls == [("gold", "k")]


def test_rank_state_is_started_by_launch_and_ended_by_finish(monkeypatch):
    monkeypatch.setattr(distributed, "_ranks", distributed._Ranks(rank=1))  # as launch leaves it on rank 1
    assert distributed.rank() == 1 and not distributed.is_main()
    distributed.finish()
    assert distributed.rank() == 0 and distributed.is_main() and distributed._ranks.children == []


def test_a_rank_above_0_returns_none_and_writes_nothing(monkeypatch, tmp_path, session_cache):
    """It trains with rank 0 (here: alone, from the shared cache) and leaves evaluation and files to rank 0."""
    from mu_lightning.pipeline import run

    monkeypatch.setattr(distributed, "_ranks", distributed._Ranks(rank=1))
    cfg = compose_cfg(tmp_path, ["unlearner=none", "callbacks.forget_retain=null", f"paths.cache_dir={session_cache}"])
    assert run(cfg) is None
    assert not list((tmp_path / "run").iterdir())


@pytest.mark.slow
def test_ddp_multirun_runs_each_job_once_and_matches_one_process(tmp_path, run_pipeline):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "trainer=ddp_cpu", "metric=fast,full",
                          *SMALL, *HALF_BATCH, f"paths.cache_dir={tmp_path / 'cache'}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    # one sweep, run once: rank 1 ran each job in RUN mode inside that job's directory, never a sweep of its own
    sweeps = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(sweeps) == 1 and not (tmp_path / "outputs" / "runs").exists()
    jobs = [sweeps[0] / "0", sweeps[0] / "1"]
    assert sorted(p.name for p in sweeps[0].iterdir() if p.is_dir()) == ["0", "1"]
    for job in jobs:
        assert (job / "results.json").exists() and (job / "train_rank1.log").exists()
        assert "unlearn " in (job / "train_rank1.log").read_text()  # rank 1 trained the unlearning stage too
    first, second = (json.loads((job / "results.json").read_text()) for job in jobs)
    assert first["sizes"]["train"] % 2 == 0 and first["sizes"]["forget"] % 2 == 0  # see SMALL
    # rank 0 trained and stored original and gold once (rank 1 trained with it); job 1 loaded them on both ranks
    assert [first["stages"][s]["cache_hit"] for s in ("original", "gold")] == [False, False]
    assert [second["stages"][s]["cache_hit"] for s in ("original", "gold")] == [True, True]
    # metric=full trains more gold seeds inside the evaluation step: both ranks joined those fits
    assert "unlearn/ks_pvalue" in second["metrics"] and "seed 1," in (jobs[1] / "train_rank1.log").read_text()

    single = run_pipeline(*SMALL, *FULL_BATCH)["metrics"]
    ddp = first["metrics"]
    # Same global batches, so the only difference is float summation order (gloo's all-reduce averages two
    # half-batch gradients; one process takes one mean over 64): measured ≤ 4e-7 on every metric. 1e-4 leaves room
    # for that drift to grow over more steps while still catching any change of batches, steps or shards, which
    # moves accuracies by whole examples (≥ 1/44 on D_f) and distances by 1e-2 or more.
    compared = [k for k in single if "seconds" not in k and "speedup" not in k]
    assert len(compared) > 40
    for key in compared:
        if single[key] is None or ddp[key] is None:  # null in both (an attack at chance): nothing to compare
            assert single[key] is None and ddp[key] is None, (key, ddp[key], single[key])
            continue
        assert math.isclose(ddp[key], single[key], rel_tol=1e-4, abs_tol=1e-4), (key, ddp[key], single[key])


@pytest.mark.slow
def test_ddp_serves_sequential_requests_on_both_ranks(tmp_path):
    """Ranks stay in the process group between requests: the next request's gold and unlearning need both."""
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer=ddp_cpu", *SMALL[:-1], "forget=sequential",
                          "forget.requests=[{kind:class,classes:[3]},{kind:class,classes:[5]}]",
                          "unlearner=random_label", "callbacks.forget_retain=null", "hydra.run.dir=run"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["metrics"]["gold/forget_acc"] for r in res["requests"]] == [0.0, 0.0]
    rank1 = (tmp_path / "run" / "train_rank1.log").read_text()
    assert rank1.count("gold     trained on retain") == 2 and rank1.count("unlearn  RandomLabel") == 2
