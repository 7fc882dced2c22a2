"""Evaluation-only entry (``python eval.py`` and ``mu-eval``): the pipeline of train.py with M_u given, not trained.

Two ways in (docs/checkpoints.md):

- ``unlearned.checkpoint=PATH``: M_u is a model unlearned elsewhere; original and gold come from the stage cache
  (or are trained, or given: ``original.checkpoint``, ``gold.checkpoint``); the same metrics, results.json, loggers
  and reports as a run of train.py, with M_u's training time and steps unknown (null).
- ``run_dir=DIR``: a completed run evaluated again, typically with another tier (``metric=full``): the config its
  results.json records (never ``.hydra/config.yaml``, which a later failed run may have rewritten) and its unlearned
  weights (``DIR/unlearned.pt``, written with ``save_unlearned=true``), which must be the files results.json
  recorded the SHA-256 of. No override may change a stage cache key (a trainer setting), so original and gold come
  from the cache. The results go to ``DIR/eval_<tier>/``; the run's own files are never touched.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mu_lightning.cli import execute
from mu_lightning.errors import ConfigError
from mu_lightning.files import mismatched_files
from mu_lightning.runtime.command_line import exit_on_unsafe_command_line

log = logging.getLogger(__name__)

# What the command line may change when it evaluates a run again; the rest is the run's own config
RERUN_OPTIONS = ("metric", "logger", "paths.cache_dir", "threads", "trainer", "extras", "tags")  # none changes a model


def _eval_dir(run_dir: str | None, tier: str, default: str) -> str:
    """``hydra.run.dir`` of eval.py: ``<run_dir>/eval_<tier>`` when evaluating a run again, else ``default``."""
    return default if run_dir is None else str(Path(run_dir) / f"eval_{tier}")


OmegaConf.register_new_resolver("mu_eval_dir", _eval_dir, replace=True)


def main() -> None:
    """``python eval.py`` / ``mu-eval``: the command line's Hydra settings checked (targets.py) and its run
    directory kept out of the run it evaluates, then ``evaluate``."""
    exit_on_unsafe_command_line(config_name="eval", calling_module="mu_lightning.eval_cli")
    given = dict(a.lstrip("+").split("=", 1) for a in sys.argv[1:] if "=" in a and not a.startswith("-"))
    if given.get("run_dir") and given.get("hydra.run.dir"):
        try:  # before Hydra writes its .hydra/ and eval.log there
            _check_not_into(Path(given["run_dir"].strip("'\"")), given["hydra.run.dir"].strip("'\""))
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    evaluate()


@hydra.main(version_base="1.3", config_path="pkg://mu_lightning.conf", config_name="eval")
def evaluate(cfg: DictConfig) -> float | None:
    return execute(cfg, evaluation_config, warn_about_checkpoints)


def evaluation_config(cfg: DictConfig) -> DictConfig:
    """The config eval.py runs: ``cfg`` itself with ``unlearned.checkpoint`` given, or that of ``run_dir``."""
    if cfg.get("run_dir") is None:
        if not OmegaConf.select(cfg, "unlearned.checkpoint"):
            raise ConfigError("eval.py needs unlearned.checkpoint=PATH (a model unlearned elsewhere) or run_dir=DIR "
                              "(a completed run to evaluate again, e.g. with metric=full)")
        return cfg
    return rerun_config(cfg, [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task])


TEST_ABOVE_TRAIN = 0.05  # a model made elsewhere scoring this much better on test than on its training samples


def warn_about_checkpoints(results: dict) -> list[str]:
    """Warnings (logged, and returned) for each model made elsewhere whose test accuracy is implausibly above its
    accuracy on the samples it was trained on: it was most likely trained on another split, test samples included."""
    warned = []
    for stage, option in (("original", "original"), ("gold", "gold"), ("unlearn", "unlearned")):
        test, train = (results["metrics"].get(f"{stage}/{m}") for m in ("test_acc", "retain_acc"))
        if results["stages"].get(stage, {}).get("source") == "checkpoint" and None not in (test, train) \
                and test > train + TEST_ABOVE_TRAIN:
            warned.append(f"{option}.checkpoint scores {test:.4f} on the test split but only {train:.4f} on the "
                          "retain samples it was trained on: it was most likely trained on another split, which put "
                          "test samples in its training set; train it on this run's split_ids.json "
                          "(docs/checkpoints.md)")
    for warning in warned:
        log.warning("warning  %s", warning)
    return warned


def rerun_config(cfg: DictConfig, overridden: list[str]) -> DictConfig:
    """The config of the run in ``cfg.run_dir`` as its results.json records it, its unlearned weights as
    ``unlearned.checkpoint``, with ``metric`` and whatever of ``RERUN_OPTIONS`` the command line (``overridden``: its
    keys) sets taken from ``cfg``; every path into the run directory points into this evaluation's own instead."""
    run = Path(cfg.run_dir)
    _check_not_into(run, cfg.paths.output_dir)
    record = _run_record(run)
    other = [k for k in overridden if k != "run_dir" and not k.startswith("hydra")
             and not any(k == o or k.startswith(f"{o}.") for o in RERUN_OPTIONS)]
    if other:
        raise ConfigError(f"{other[0]} cannot be changed when evaluating run_dir={run} again: it keeps the run's "
                          f"own config; only {', '.join(RERUN_OPTIONS)} may be given")
    _check_files(run, record)
    config = OmegaConf.create(_moved(record["config"], str(record["config"]["paths"]["output_dir"]),
                                     str(cfg.paths.output_dir)))
    chosen = [o for o in RERUN_OPTIONS[1:] if any(k == o or k.startswith(f"{o}.") for k in overridden)]
    for option in ("metric", *chosen):  # the tier always: the directory is named after it
        OmegaConf.update(config, option, OmegaConf.select(cfg, option), merge=False, force_add=True)
    _check_same_keys(run, record["config"], config)
    OmegaConf.update(config, "paths.root_dir", cfg.paths.root_dir, merge=False, force_add=True)
    OmegaConf.update(config, "unlearned", {"checkpoint": str(run / "unlearned.pt")}, merge=False, force_add=True)
    return config


def _check_not_into(run: Path, output_dir: str) -> None:
    """eval.py never writes into the run it scores (its outputs would be set aside as an earlier run's)."""
    if Path(output_dir).resolve() == run.resolve():
        raise ConfigError(f"hydra.run.dir={output_dir} is the run being evaluated (run_dir={run}): eval.py never "
                          "writes into the run it scores; leave hydra.run.dir out (it writes to run_dir/eval_<tier>/) "
                          "or choose another directory")


def _run_record(run: Path) -> dict:
    """The run's results.json, with the recorded config and file digests eval.py reads; ConfigError otherwise."""
    try:
        record = json.loads((run / "results.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"run_dir={run} is not a completed run directory of train.py (its results.json cannot be "
                          f"read: {type(err).__name__})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or \
            not isinstance(OmegaConf.select(OmegaConf.create(record["config"]), "paths.output_dir"), str):
        raise ConfigError(f"run_dir={run}: its results.json records no run config; it is not a run of train.py")
    if not (run / "unlearned.pt").is_file():
        raise ConfigError(f"run_dir={run} has no unlearned.pt: that run did not keep its unlearned weights; run it "
                          "again with save_unlearned=true, then evaluate it again")
    return record


def _check_files(run: Path, record: dict) -> None:
    """The run's files are those its results.json recorded (``files.run_digests``): no file of another run."""
    files = record.get("files")
    if not isinstance(files, dict) or "unlearned.pt" not in files:
        raise ConfigError(f"run_dir={run}: its results.json records no digest of unlearned.pt (a run of an older "
                          "version): run it again with save_unlearned=true, then evaluate it again")
    wrong = mismatched_files(run, files)
    if wrong:
        raise ConfigError(f"run_dir={run} mixes files of different runs: {', '.join(wrong[:3])} "
                          f"{'is' if len(wrong) == 1 else 'are'} not the one{'s' * (len(wrong) > 1)} its results.json "
                          "recorded; evaluate a run directory as its run left it")


def _check_same_keys(run: Path, recorded: dict, config: DictConfig) -> None:
    """No override changes how original and gold were trained: the trainer settings in their cache keys."""
    from mu_lightning.pipeline import trainer_key

    before, after = trainer_key(OmegaConf.create(recorded)), trainer_key(config)
    changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    if changed:
        raise ConfigError(f"trainer.{changed[0]} cannot be changed when evaluating run_dir={run} again: it is part "
                          "of the original and gold models' stage cache keys, so they would be trained again "
                          "instead of being the run's own; leave it as the run had it")


def _moved(node, old: str, new: str):
    """``node`` (plain containers) with every string that is ``old`` or a path below it moved to ``new``."""
    if isinstance(node, dict):
        return {k: _moved(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_moved(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old):]
    return node
