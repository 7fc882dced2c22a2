"""DDP for the whole pipeline: every rank runs ``pipeline.run`` from the top; rank 0 alone decides and writes.

Why this shape. Lightning's DDP launcher starts ranks 1.. by running the command line again, so every rank executes
the pipeline, and left alone that goes wrong in three places:

1. The stage cache. Rank 0 holds an entry's file lock while it trains; a rank 1 that took the same lock would wait
   for a fit that cannot finish without it. Here only rank 0 looks an entry up and stores it; it broadcasts whether
   the others must train with it, and then its weights and facts, so every rank holds the same model.
2. A multirun. The re-run command line would still hold ``-m`` and the sweep, so rank 1 would start a sweep of its
   own (docs/design.md, "Hydra"). ``launch`` starts the other ranks itself with this job's overrides only, in RUN
   mode, writing into this job's directory; ``finish`` ends the process group and clears the DDP environment
   variables, so the next job of the sweep starts fresh ranks.
3. Files and evaluation. ``results.json``, ``forget_ids.txt`` and ``logits.pt`` come from rank 0 only. After the
   unlearning stage the ranks leave the process group and rank 0 evaluates alone, except under metric tiers that
   train extra models (``full``, ``seeds``), whose fits need every rank: there all ranks evaluate, and the others
   discard their numbers.

The ranks start when the run starts (not at the first ``fit``, as Lightning would start them) so that the process
group exists for the broadcasts; each later Trainer finds ``LOCAL_RANK`` set and the group initialised, and starts
nothing. Where a cluster starts the processes itself (SLURM ``srun``, ``torchrun``) nothing is started here. This
process's part (its rank, the rank processes it started) is one ``_Ranks`` object: ``launch`` starts it,
``finish`` ends it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.distributed as dist
from omegaconf import DictConfig

from mu_lightning.errors import ConfigError

log = logging.getLogger(__name__)

SINGLE = ("auto", "single_device", None)
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # fit in fresh processes: no steps or divergence come back
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
GRACE_S = 10.0  # seconds rank 0 may take to fail by itself after another rank failed
TIERS_THAT_TRAIN = ("full", "seeds")  # their evaluation trains more gold / unlearned models (metrics/full.py, seeds.py)


@dataclass
class _Ranks:
    """This process's part in a DDP run: its global rank and the rank processes it started.

    ``launch`` puts a new one in place when the ranks start and ``finish`` ends it and puts a blank one back; nothing
    else changes it. ``rank`` outlives the process group (``join_evaluation`` may end the group early) until then.
    """

    rank: int = 0
    children: list[subprocess.Popen] = field(default_factory=list)
    finishing: threading.Event = field(default_factory=threading.Event)  # set once ``end`` stops the ranks on purpose

    def start_children(self, env, processes: int, nodes: int, hydra) -> None:
        """Run this job's command again for local ranks 1.., in RUN mode, into this job's directory."""
        import __main__

        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK="0", WORLD_SIZE=str(processes * nodes))
        spec = getattr(__main__, "__spec__", None)
        program = ([sys.executable, "-m", spec.name] if spec is not None
                   else [sys.executable, os.path.join(hydra.runtime.cwd, sys.argv[0])])
        dirs = [f"--config-dir={s.path}" for s in hydra.runtime.config_sources if s.provider == "command-line"]
        for rank in range(1, processes):
            command = [*program, f"--config-name={hydra.job.config_name}", *dirs, *hydra.overrides.task,
                       f'hydra.run.dir="{hydra.runtime.output_dir}"', "hydra.output_subdir=null",
                       f"hydra.job.name={hydra.job.name}_rank{rank}"]
            self.children.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(rank)},
                                                  cwd=hydra.runtime.cwd))
        threading.Thread(target=_watch, args=(list(self.children), self.finishing), daemon=True).start()

    def end(self, ok: bool) -> None:
        """End the process group; wait for the rank processes (kill them after a failure); clear what launch set."""
        self.finishing.set()
        if dist.is_initialized():
            if ok:
                dist.barrier()
            dist.destroy_process_group()
        for child in self.children:
            if not ok:
                child.kill()
            child.wait()
        if self.children:
            for name in DDP_ENV:
                os.environ.pop(name, None)


_ranks = _Ranks()


def check_strategy(cfg: DictConfig) -> None:
    """``trainer.strategy`` can run the pipeline: not a spawning one; DDP only from the command line (its ranks start
    by running it again), and never several DDP jobs side by side under joblib. Called by ``checks.check_config``."""
    strategy = cfg.trainer.get("strategy", "auto")
    if strategy in SPAWNING:
        raise ConfigError(f"trainer.strategy={strategy} is not supported: its ranks run in fresh processes that return "
                          "no steps or divergence to the pipeline; use trainer=ddp (GPUs) or trainer=ddp_cpu")
    if strategy in SINGLE or dist.is_initialized():
        return
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is None or not hydra.runtime.get("output_dir"):
        raise ConfigError(f"trainer.strategy={strategy} starts its other ranks by running the command line again: "
                          "run it as python train.py trainer=ddp ..., not by calling pipeline.run in-process")
    if "joblib" in str(hydra.launcher.get("_target_", "")):
        raise ConfigError(f"trainer.strategy={strategy} with hydra/launcher=joblib would run several DDP jobs on the "
                          "same devices at once: sweep DDP jobs with the basic launcher (one after another) or SLURM")


def launch(cfg: DictConfig) -> None:
    """Start this job's other ranks (if this process is the one that must) and join the process group; the config
    has passed ``check_strategy``."""
    global _ranks
    strategy = cfg.trainer.get("strategy", "auto")
    if strategy in SINGLE or dist.is_initialized():
        return
    import lightning as L
    from hydra.core.hydra_config import HydraConfig

    fabric = L.Fabric(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
                      num_nodes=cfg.trainer.get("num_nodes", 1), strategy=strategy)
    env = fabric.strategy.cluster_environment
    _ranks = _Ranks()
    if not env.creates_processes_externally:
        _ranks.start_children(env, fabric.strategy.num_processes, fabric.strategy.num_nodes, HydraConfig.get())
    fabric.launch()
    _ranks.rank = dist.get_rank()
    log.info("rank %d of %d joined the process group (%s)", dist.get_rank(), dist.get_world_size(), strategy)


def finish(ok: bool = True) -> None:
    """End the process group after a run; clear the DDP variables this process set so the next job starts afresh."""
    global _ranks
    _ranks.end(ok)
    _ranks = _Ranks()


def _watch(children: list[subprocess.Popen], finishing: threading.Event) -> None:
    """A rank that fails leaves the others waiting in a collective forever: end this process too.

    Rank 0 gets a grace period first: an error that every rank meets (a bad forget request) should reach the user as
    rank 0's own message, not as a kill."""
    for child in children:
        if child.wait() != 0 and not finishing.wait(GRACE_S):
            log.error("rank process %d exited with code %d; stopping rank 0", child.pid, child.returncode)
            os.kill(os.getpid(), signal.SIGTERM)


def rank_lost(err: BaseException) -> bool:
    """Whether ``err`` is what a collective raises when a peer rank stopped: a RuntimeError (gloo, NCCL) while this
    process is one of several DDP ranks. ``cli`` words it as a fault instead of gloo's traceback."""
    several = bool(_ranks.children) or (dist.is_initialized() and dist.get_world_size() > 1)
    return isinstance(err, RuntimeError) and several


def rank() -> int:
    """This process's global rank; kept after the group ends early (``join_evaluation``) until ``finish``."""
    return dist.get_rank() if dist.is_initialized() else _ranks.rank


def is_main() -> bool:
    """True on rank 0 and in a single-process run: the process that writes files and evaluates."""
    return rank() == 0


def join_evaluation(metric_cfg: DictConfig, more_to_train: bool = False) -> bool:
    """Whether this rank runs the evaluation step: rank 0 always, the others when it or a later request (of
    ``forget=sequential``: ``more_to_train``) trains models.

    Otherwise the ranks leave the process group here, before evaluating: torchmetrics' ``compute`` gathers from
    every rank of an initialised group, so rank 0 evaluating alone inside the group would wait for the others.
    With the extra fits of the ``full`` and ``seeds`` tiers every rank evaluates the same full splits, and the
    gathered means, accuracies and AUCs over identical copies equal one rank's.
    """
    if more_to_train or metric_cfg.tier in TIERS_THAT_TRAIN:
        return True
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return is_main()


def key_extra() -> dict[str, int]:
    """Stage-cache key entries for the rank count: N ranks step on global batches of N × batch_size, so they train
    another model than one process; empty in one process, so single-process keys stay as they were."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {"world_size": world} if world > 1 else {}


def get_or_train(cache, stage: str, key: str, train: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict, bool]:
    """``cache.get_or_train`` on rank 0; the other ranks train with it on a miss and take its result."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return cache.get_or_train(stage, key, train)
    if is_main():
        missed: list[bool] = []

        def train_with_others() -> tuple[dict, dict]:
            missed.append(_broadcast(True))
            return train()

        result: Any = cache.get_or_train(stage, key, train_with_others)
        if not missed:
            _broadcast(False)
    else:
        result = (*train(), False) if _broadcast(None) else None
    return _broadcast(result)


def _broadcast(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
