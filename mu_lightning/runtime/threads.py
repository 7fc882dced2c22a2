"""Torch CPU threads per process: one for small training steps, else the cores shared among the processes that run
at once on this machine (docs/performance.md, "Threads")."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mu_lightning.errors import ConfigError
from mu_lightning.runtime.distributed import SINGLE

# FLOPs of one training step (forward and backward of a batch, ``training_step_flops``) below which one thread is
# used: on the 2-core development machine a second intra-op thread never paid up to the largest step measured, 5.9
# GFLOP, and cost 1.4–100× beside busy processes (scripts/benchmark.py §6; docs/performance.md, "Threads").
CROSSOVER_FLOPS = 10_000_000_000

_CHOICE: dict[str, Any] = {"threads_policy": "not chosen (no run started in this process)"}
TORCH_DEFAULT = torch.get_num_threads()  # torch's own choice, before any run of this process set another


def check_threads(cfg: DictConfig) -> None:
    """``threads`` is null or a positive integer (called by ``checks.check_config``)."""
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads={threads!r} is not allowed: it must be a positive integer, or null to let the "
                          "run choose (one thread for small training steps, else the cores shared among the "
                          "processes a run or sweep starts)")


def apply_threads(cfg: DictConfig) -> dict[str, Any]:
    """Set this process's torch CPU threads by ``choose_threads`` (weighing ``step_flops(cfg)``) and remember why
    (``threads_record``)."""
    threads, reason = choose_threads(cfg, lambda: step_flops(cfg))
    if threads is not None:
        torch.set_num_threads(threads)
    _CHOICE["threads_policy"] = reason
    return threads_record()


def threads_record() -> dict[str, Any]:
    """results.json's ``threads`` (this process's torch CPU threads) and ``threads_policy`` (why that many)."""
    return {"threads": torch.get_num_threads(), "threads_policy": _CHOICE["threads_policy"]}


def choose_threads(cfg: DictConfig, step_flops: Callable[[], int | None]) -> tuple[int | None, str]:
    """Torch CPU threads for this process (None: leave them) and the reason: ``threads`` if set; as they are if the
    user set ``OMP_NUM_THREADS``; else one thread when a training step (``step_flops()``, forward and backward of
    one batch) is below ``CROSSOVER_FLOPS``, and above it the cores shared among the processes that run at once here
    (``cpu_threads``), torch's default for one process alone.

    Why one thread for small steps: a second intra-op thread saves little there, and beside a busy process two
    threads that wait for each other on a shared core made a digits run up to 20× slower (docs/performance.md,
    "Threads"). The choice depends on the config and the machine only, never on its load at the time: the thread
    count can change a float sum's order, and a run must give the same numbers however busy the machine is."""
    if cfg.get("threads") is not None:  # a positive integer: check_threads has run (checks.check_config)
        return cfg.threads, f"threads={cfg.threads} as set"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, f"torch's default under OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} as set"
    flops = step_flops()
    size = "the size of a training step is unknown" if flops is None else \
        f"a training step of {_giga(flops)}, {'below' if flops < CROSSOVER_FLOPS else 'above'} the " \
        f"{_giga(CROSSOVER_FLOPS)} where a second thread starts to pay"
    if flops is not None and flops < CROSSOVER_FLOPS:
        return 1, f"1: {size}"
    share, cores = cpu_threads(cfg), os.cpu_count() or 1
    if share is None:  # set again: an earlier run of this process (a sweep's job) may have chosen one
        return TORCH_DEFAULT, f"{TORCH_DEFAULT} (torch's default on {cores} cores): {size}"
    return share, f"{share} ({cores} cores shared among {processes_together(cfg)} processes): {size}"


def _giga(flops: int) -> str:
    return f"{flops / 1e9:.3g} GFLOP"


def cpu_threads(cfg: DictConfig) -> int | None:
    """This machine's cores shared among the processes that run at once here (``processes_together``), or None for
    one process alone (torch's default: every core); ``threads`` if set, None under the user's ``OMP_NUM_THREADS``.

    Sharing matters: processes that each run one thread per core on the same cores thrash in OpenMP's spin-waits
    (torchrun sets ``OMP_NUM_THREADS=1`` for the same reason)."""
    if cfg.get("threads") is not None:
        return cfg.threads
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    processes = processes_together(cfg)
    return max((os.cpu_count() or 1) // processes, 1) if processes > 1 else None


def processes_together(cfg: DictConfig) -> int:
    """The processes of this run or sweep that train at once on this machine: the DDP ranks a run starts, times the
    jobs a joblib sweep runs side by side."""
    processes = 1
    devices = cfg.trainer.get("devices", 1)
    if cfg.trainer.get("strategy", "auto") not in SINGLE:  # one rank per device ("auto" counted as one)
        if isinstance(devices, list | ListConfig):
            processes = len(devices)
        elif isinstance(devices, int) and devices > 0:
            processes = devices
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and "joblib" in str(HydraConfig.get().launcher.get("_target_", "")):
        n_jobs = HydraConfig.get().launcher.get("n_jobs") or 1
        cores = os.cpu_count() or 1
        processes *= n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)  # joblib: -1 is every core, -2 all but one
    return processes


def step_flops(cfg: DictConfig) -> int | None:
    """FLOPs of one training step of the configured model at ``train.batch_size``; None without
    ``dataset.input_shape``, or when the model cannot be built or run on such inputs (the checks after the data has
    loaded refuse it then, with their own message). The global random state is left as it was."""
    shape = OmegaConf.select(cfg, "dataset.input_shape")
    if shape is None:
        return None
    from hydra.utils import instantiate
    from lightning.pytorch.utilities.seed import isolate_rng

    with isolate_rng():
        try:
            return training_step_flops(instantiate(cfg.model), list(shape), cfg.train.batch_size)
        except Exception:  # noqa: BLE001 - any failure here is reported by check_data, which knows the data
            return None


def training_step_flops(model: torch.nn.Module, input_shape, batch_size: int) -> int:
    """FLOPs of one training step of ``model`` on a batch of ``batch_size`` inputs of ``input_shape``: the forward
    of two samples counted (in eval mode, without gradients: no weight or statistic changes) and scaled to the batch,
    times 3 for the backward (an MLP's is 2.52×, docs/performance.md)."""
    from mu_lightning.stages.flops import TotalFlopCounter

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), TotalFlopCounter(display=False) as counter:
            model(torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)
    return 3 * int(counter.get_total_flops()) * int(batch_size) // 2
