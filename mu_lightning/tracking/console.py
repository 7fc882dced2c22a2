"""What the command line shows around a run: the config at start (its choices and overrides, or the whole tree), and
in a sweep each log line prefixed by its job (both set up by ``cli.execute`` before the pipeline runs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("mu_lightning")


class JobPrefix(logging.Filter):
    """Starts each log line of a sweep job with its job number and method (``#3 finetune``), so the lines of
    parallel jobs (hydra/launcher=joblib) that interleave on one console can be told apart. Put on every handler;
    a record is prefixed once, however many handlers it passes."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix.replace("%", "%%")

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "job_prefixed", False):
            record.msg, record.job_prefixed = f"{self.prefix} {record.msg}", True
        return True


def label_job_logs() -> None:
    """In a multirun job, a ``JobPrefix`` on the root logger's handlers (which Hydra sets up anew for each job)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra_cfg = HydraConfig.get()
    prefix = JobPrefix(f"#{hydra_cfg.job.num} {hydra_cfg.runtime.choices.get('unlearner') or ''}".rstrip())
    for handler in logging.getLogger().handlers:
        handler.addFilter(prefix)


def show_config(cfg: DictConfig) -> None:
    """The config at start, as ``extras.print_config`` says: ``short`` (the default: the group choices and the
    command-line overrides, two lines), ``full`` (the whole tree; ``true`` too) or ``false``; ``config_tree.log`` in
    the run directory gets the whole tree unless it is ``false``. In a sweep, only the first job prints it (Hydra
    prints each job's overrides as it launches it); on the first process only (DDP's other ranks start with
    ``LOCAL_RANK`` set)."""
    mode = str(OmegaConf.select(cfg, "extras.print_config", default="short")).lower()
    if mode in ("false", "none", "off") or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    first = not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN or \
        str(HydraConfig.get().job.num) == "0"
    if mode in ("full", "true"):
        print_config(cfg, to_console=first)
        return
    print_config(cfg, to_console=False)
    if first:
        for line in short_config(cfg):
            log.info("%s", line)


def short_config(cfg: DictConfig) -> list[str]:
    """The config in two lines: each config group's choice (``dataset=digits model=mlp ...``), then the
    command-line overrides (the job's, in a sweep) and where the whole tree is."""
    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    first = ("dataset", "model", "forget", "unlearner", "metric", "logger", "callbacks", "trainer")
    groups = sorted(choices, key=lambda g: first.index(g) if g in first else len(first))
    shown = [f"{group}={choices[group]}" for group in groups if choices[group] and not group.startswith("hydra")
             and group not in ("paths", "extras")]
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return [f"config   {' '.join(shown) or 'composed without Hydra'}",
            f"         overrides: {' '.join(overrides) or 'none'}; the whole config: config_tree.log in the run "
            "directory (extras.print_config=full prints it)"]


def print_config(cfg: DictConfig, to_console: bool = True) -> None:
    """The composed config as a tree, one branch per top-level key, on the console (unless ``to_console`` is off) and
    in ``config_tree.log`` of the run directory (rich, as lightning-hydra-template prints it). Values are shown
    resolved where they resolve."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree(f"config of {cfg.get('task_name') or 'the run'}", guide_style="dim")
    for key in cfg:
        node = cfg._get_node(key)
        try:
            text = OmegaConf.to_yaml(cfg[key], resolve=True) if OmegaConf.is_config(node) else str(cfg[key])
        except Exception:  # an interpolation that resolves only later: shown as written
            text = OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else str(node._value())
        tree.add(str(key), guide_style="dim").add(Syntax(text.rstrip() or "{}", "yaml", theme="ansi_dark"))
    if to_console:
        Console().print(tree)
    out = Path(OmegaConf.select(cfg, "paths.output_dir", default="") or "")
    if str(out) and out.is_dir():
        with (out / "config_tree.log").open("w") as f:
            Console(file=f, width=120, color_system=None).print(tree)


def to_log_files(text: str) -> None:
    """``text`` as one INFO line in the log files of the root logger (Hydra's ``train.log``) and nowhere else: for
    what the console shows already (the result table is printed)."""
    record = logging.LogRecord(__name__, logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
