"""Torch CPU threads per process, shared among the processes that run at once on this machine."""

from __future__ import annotations

import os

from omegaconf import DictConfig, ListConfig

from mu_lightning.errors import ConfigError
from mu_lightning.runtime.distributed import SINGLE


def check_threads(cfg: DictConfig) -> None:
    """``threads`` is null or a positive integer (called by ``checks.check_config``)."""
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads={threads!r} is not allowed: it must be a positive integer, or null to share "
                          "this machine's cores among the processes a run or sweep starts")


def cpu_threads(cfg: DictConfig) -> int | None:
    """Torch CPU threads for this process: ``threads`` if set; else this machine's cores shared among the processes
    that run at once here (the DDP ranks a run starts, times the jobs a joblib sweep runs side by side); None keeps
    torch's default (one process alone, or ``OMP_NUM_THREADS`` set by the user).

    Sharing matters more than it seems: two processes that each run torch's default of one thread per core on the
    same cores thrash in OpenMP's spin-waits. A digits model that trains in 0.4 s alone took 22 s beside one busy
    process (docs/design.md, "Start-up and overhead"; torchrun sets ``OMP_NUM_THREADS=1`` for the same reason).
    """
    if cfg.get("threads") is not None:  # a positive integer: check_threads has run (checks.check_config)
        return cfg.threads
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = os.cpu_count() or 1
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
        processes *= n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)  # joblib: -1 is every core, -2 all but one
    return max(cores // processes, 1) if processes > 1 else None
