"""Command-line entry (``python train.py`` and ``mu-train``): Hydra composes the config, the pipeline runs it."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

from mu_lightning.errors import ConfigError, RunFault
from mu_lightning.files import check_dir_overrides, lock_run_dir, unlock_run_dir
from mu_lightning.runtime.command_line import guard_command_line
from mu_lightning.tracking import console

log = logging.getLogger("mu_lightning")


def _guard_run_dirs(entry: Callable[..., Any]) -> Callable[..., Any]:
    """From the command line, a run or sweep directory that cannot be written is a ConfigError (exit code 2) before
    Hydra tries to create it (``files.check_dir_overrides``)."""

    @functools.wraps(entry)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            try:
                check_dir_overrides(sys.argv[1:])
                _lock_given_run_dir(sys.argv[1:])
            except ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
        return entry(*args, **kwargs)

    return guarded


def _lock_given_run_dir(argv: list[str]) -> None:
    """A single run into ``hydra.run.dir=D`` takes D's lock before Hydra writes its .hydra/ and log there."""
    given = [a.partition("=")[2].strip("'\"") for a in argv if a.lstrip("+").startswith("hydra.run.dir=")]
    jobless = any(a.startswith("-") and not a.startswith(("--config-dir", "--config-name", "-cd", "-cn")) for a in argv)
    if given and "${" not in given[-1] and not jobless and _primary():
        lock_run_dir(given[-1])


def _primary() -> bool:
    """This process is the one that writes the run's files (not a DDP rank > 0 or another SLURM task)."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


@guard_command_line  # Hydra acts on its own settings before main runs: check them first (runtime/command_line.py)
@_guard_run_dirs
@hydra.main(version_base="1.3", config_path="pkg://mu_lightning.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one experiment; returns the configured ``objective`` (for a sweeper such as Optuna), or None."""
    return execute(cfg)


def execute(cfg: DictConfig, prepare: Callable[[DictConfig], DictConfig] | None = None,
            after: Callable[[dict], None] | None = None) -> float | None:
    """``pipeline.run`` on ``cfg`` (after ``prepare``, eval.py's: ``eval_cli.evaluation_config``; then ``after`` on
    the results, eval.py's ``eval_cli.warn_about_checkpoints``) with the command line's error handling: a
    ConfigError exits with code 2, an OSError with 1, both before any training."""
    from mu_lightning.pipeline import run  # imported here so --help and config errors answer fast
    from mu_lightning.runtime import debug, distributed
    from mu_lightning.tuning import objective as hpo

    ok, interrupted, run_dir = False, _watch_ctrl_c(), HydraConfig.get().runtime.output_dir
    try:
        if _primary():
            lock_run_dir(run_dir)  # one run per run directory (files.py)
        console.label_job_logs()  # sweep jobs: "#3 finetune" before each log line
        debug.apply_epochs(cfg)  # debug.epochs (pipeline.start_up applies it too): the config shows what will run
        console.show_config(cfg)  # extras.print_config
        results = run(prepare(cfg) if prepare else cfg)  # None on DDP ranks > 0
        if after is not None and results is not None:
            after(results)
        ok = True
        return hpo.objective_value(cfg, results)
    except BaseException as err:  # noqa: BLE001 - Lightning turns Ctrl-C into SystemExit(1); sorted out below
        code = _exit_code(err, interrupted, distributed.rank_lost(err))
        if code is None or (code not in INTERRUPTED.values() and HydraConfig.get().mode == RunMode.MULTIRUN):
            raise  # not ours to word; in a sweep Hydra records the failed job and the sweep goes on with the others
        sys.exit(code)
    finally:
        distributed.finish(ok)  # DDP: end this job's process group so a sweep's next job starts fresh ranks
        unlock_run_dir(run_dir)


def _watch_ctrl_c() -> list[str]:
    """A list that gets the signal's name when Ctrl-C (SIGINT) or SIGTERM (``kill``, a scheduler ending the job)
    arrives; both then interrupt the run as Ctrl-C does."""
    seen: list[str] = []

    def note(signum, frame):
        seen.append(signal.Signals(signum).name)
        signal.default_int_handler(signum, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, note)
    return seen


INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}  # exit codes: 128 + the signal's number


def _exit_code(err: BaseException, interrupted: list[str], rank_lost: bool) -> int | None:
    """Log the one-paragraph message for ``err`` and return the exit code (2 bad input, 1 fault, 130 Ctrl-C, 143
    SIGTERM); None for an error that is not a known kind (its traceback is the message)."""
    if interrupted or isinstance(err, KeyboardInterrupt):
        name = interrupted[0] if interrupted else "SIGINT"
        log.error("error: interrupted (%s): no results.json was written; stage-cache entries already stored "
                  "stay valid and the stage that was training was not stored", "Ctrl-C" if name == "SIGINT" else name)
        return INTERRUPTED[name]
    if isinstance(err, InstantiationException) and isinstance(err.__cause__, ConfigError | RunFault):
        err = err.__cause__  # a target's own refusal, wrapped by Hydra's instantiate: its message, not Hydra's
    if isinstance(err, ConfigError | RunFault):
        log.error("error: %s", err)
        return 2 if isinstance(err, ConfigError) else 1
    if isinstance(err, OSError):
        log.error("error: %s (%s); no results.json was written and the stage cache is unaffected",
                  err.strerror or err, err.filename or "no file named")
        return 1
    if rank_lost:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        log.error("error: another DDP rank stopped while the ranks worked together (%s: %s); no results.json was "
                  "written and stage-cache entries already stored stay valid. Its log is the run directory's "
                  "*_rank<N>.log", type(err).__name__, first)
        return 1
    return None

if __name__ == "__main__":
    main()
