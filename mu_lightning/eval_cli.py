"""Evaluation-only entry (``python eval.py`` and ``mu-eval``): the pipeline of train.py with M_u given, not trained.

Two ways in (docs/checkpoints.md):

- ``unlearned.checkpoint=PATH``: M_u is a model unlearned elsewhere; original and gold come from the stage cache
  (or are trained, or given: ``original.checkpoint``, ``gold.checkpoint``); the same metrics, results.json, loggers
  and reports as a run of train.py, with M_u's training time and steps unknown (null).
- ``run_dir=DIR``: a completed run evaluated again, typically with another tier (``metric=full``): its own config
  (``DIR/.hydra/config.yaml``) and its unlearned weights (``DIR/unlearned.pt``, written with ``save_unlearned=true``);
  the stage keys it recomputes are those of its results.json, so original and gold come from the cache. The results
  go to ``DIR/eval_<tier>/``; the run's own files are never touched.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mu_lightning.cli import execute
from mu_lightning.errors import ConfigError
from mu_lightning.runtime.command_line import exit_on_unsafe_command_line

# What the command line may change when it evaluates a run again; the rest is the run's own config
RERUN_OPTIONS = ("metric", "logger", "paths.cache_dir", "threads", "trainer", "extras", "tags")  # none changes a model


def _eval_dir(run_dir: str | None, tier: str, default: str) -> str:
    """``hydra.run.dir`` of eval.py: ``<run_dir>/eval_<tier>`` when evaluating a run again, else ``default``."""
    return default if run_dir is None else str(Path(run_dir) / f"eval_{tier}")


OmegaConf.register_new_resolver("mu_eval_dir", _eval_dir, replace=True)


def main() -> None:
    """``python eval.py`` / ``mu-eval``: the command line's Hydra settings checked (targets.py), then ``evaluate``."""
    exit_on_unsafe_command_line(config_name="eval", calling_module="mu_lightning.eval_cli")
    evaluate()


@hydra.main(version_base="1.3", config_path="pkg://mu_lightning.conf", config_name="eval")
def evaluate(cfg: DictConfig) -> float | None:
    return execute(cfg, evaluation_config)


def evaluation_config(cfg: DictConfig) -> DictConfig:
    """The config eval.py runs: ``cfg`` itself with ``unlearned.checkpoint`` given, or that of ``run_dir``."""
    if cfg.get("run_dir") is None:
        if not OmegaConf.select(cfg, "unlearned.checkpoint"):
            raise ConfigError("eval.py needs unlearned.checkpoint=PATH (a model unlearned elsewhere) or run_dir=DIR "
                              "(a completed run to evaluate again, e.g. with metric=full)")
        return cfg
    return rerun_config(cfg, [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task])


def rerun_config(cfg: DictConfig, overridden: list[str]) -> DictConfig:
    """The config of the run in ``cfg.run_dir``, its unlearned weights as ``unlearned.checkpoint``, with ``metric``
    and whatever of ``RERUN_OPTIONS`` the command line (``overridden``: its keys) sets taken from ``cfg``."""
    run = Path(cfg.run_dir)
    saved, weights = run / ".hydra" / "config.yaml", run / "unlearned.pt"
    if not (run / "results.json").is_file() or not saved.is_file():
        raise ConfigError(f"run_dir={run} is not a completed run directory of train.py (it needs results.json and "
                          ".hydra/config.yaml)")
    if not weights.is_file():
        raise ConfigError(f"run_dir={run} has no unlearned.pt: that run did not keep its unlearned weights; run it "
                          "again with save_unlearned=true, then evaluate it again")
    other = [k for k in overridden if k != "run_dir" and not k.startswith("hydra")
             and not any(k == o or k.startswith(f"{o}.") for o in RERUN_OPTIONS)]
    if other:
        raise ConfigError(f"{other[0]} cannot be changed when evaluating run_dir={run} again: it keeps the run's "
                          f"own config; only {', '.join(RERUN_OPTIONS)} may be given")
    config = OmegaConf.load(saved)
    chosen = [o for o in RERUN_OPTIONS[1:] if any(k == o or k.startswith(f"{o}.") for k in overridden)]
    for option in ("metric", *chosen):  # the tier always: the directory is named after it
        OmegaConf.update(config, option, OmegaConf.select(cfg, option), merge=False, force_add=True)
    OmegaConf.update(config, "unlearned", {"checkpoint": str(weights)}, merge=False, force_add=True)
    return config
