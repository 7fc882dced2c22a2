"""The thread policy (runtime/threads.py, docs/performance.md "Threads"): one thread for small training steps, the
free cores shared among the processes started together above the crossover, and the reason in results.json."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from mu_lightning.models import CNN, MLP
from mu_lightning.runtime import threads
from mu_lightning.runtime.threads import CROSSOVER_FLOPS, choose_threads, training_step_flops


def cfg_of(*overrides: str):
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def machine(monkeypatch):
    """An 8-core machine, no OMP_NUM_THREADS; torch's default of 8 threads."""
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "TORCH_DEFAULT", 8)


BIG, SMALL = 10 * CROSSOVER_FLOPS, CROSSOVER_FLOPS // 10


@pytest.mark.parametrize("overrides, flops, expected, why", [
    ([], SMALL, 1, "below"),                                                   # below the crossover: one thread
    ([], BIG, 8, "torch's default on 8 cores"),                               # above it: every core
    ([], None, 8, "the size of a training step is unknown"),                   # unknown: as above it
    (["trainer=ddp_cpu"], BIG, 4, "8 cores shared among 2 processes"),         # 2 ranks share the cores
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"], BIG, 2, "among 4"),  # 4 jobs side by side
    (["trainer=ddp_cpu"], SMALL, 1, "below"),
    (["threads=3"], SMALL, 3, "threads=3 as set"),                             # the user's choice, whatever the size
])
def test_threads_follow_the_step_size_and_the_processes_started_together(machine, overrides, flops, expected, why):
    chosen, reason = choose_threads(cfg_of(*overrides), lambda: flops)
    assert chosen == expected and why in reason


def test_the_choice_does_not_depend_on_the_load(machine, monkeypatch):
    for load in (0.0, 3.0, 40.0):  # the same numbers however busy the machine is
        monkeypatch.setattr("os.getloadavg", lambda load=load: (load, load, load))
        assert choose_threads(cfg_of("trainer=ddp_cpu"), lambda: BIG)[0] == 4


def test_the_users_omp_num_threads_is_left_alone(machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(cfg_of(), lambda: SMALL) == (None, "torch's default under OMP_NUM_THREADS=2 as set")


def test_training_step_flops_of_the_digits_mlp_by_hand_and_of_a_cnn():
    forward_per_sample = 2 * (64 * 128 + 128 * 64 + 64 * 10)
    model = MLP([1, 8, 8], 10)
    assert training_step_flops(model, (1, 8, 8), 64) == 3 * 64 * forward_per_sample
    cnn = CNN([1, 28, 28], 10).train()
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    flops = training_step_flops(cnn, (1, 28, 28), 64)
    assert training_step_flops(cnn, (1, 28, 28), 256) == 4 * flops > 0  # linear in the batch
    assert cnn.training and all(torch.equal(v, state[k]) for k, v in cnn.state_dict().items())  # nothing changed


def test_a_run_records_its_threads_and_why(run_pipeline, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        res = run_pipeline("unlearner=none", "callbacks.forget_retain=null", shared_cache=True)
        assert res["threads"] == torch.get_num_threads() == 1  # the default MLP is far below the crossover
        assert res["threads_policy"].startswith("1: a training step of ") and "below" in res["threads_policy"]
        assert threads.threads_record() == {k: res[k] for k in ("threads", "threads_policy")}
    finally:
        torch.set_num_threads(before)


def test_a_later_run_of_the_same_process_gets_the_cores_back(machine, monkeypatch):
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    monkeypatch.setattr(threads, "step_flops", lambda cfg: SMALL)
    threads.apply_threads(cfg_of())  # a sweep's first job: a small model
    monkeypatch.setattr(threads, "step_flops", lambda cfg: BIG)
    threads.apply_threads(cfg_of())  # its next job, in the same process: a large one
    assert set_to == [1, 8]
