"""Checks that run before any training: a bad config or input fails early, with a message that names the option,
the bad value and what is allowed (ARCHITECTURE.md, "Errors are early and specific")."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.forget import by_class
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import check_config as check_metric_config
from mu_lightning.stages import Unlearner

# Hydra's `_target_` may only name the project's classes and the library classes its configs use: nothing from a
# config file or the command line is run as arbitrary code.
ALLOWED_TARGETS = ("mu_lightning.", "torch.optim.", "torch.nn.", "lightning.pytorch.callbacks.",
                   "lightning.pytorch.loggers.")
POSITIVE = {"lr", "batch_size"}
NON_NEGATIVE = {"epochs", "weight_decay", "momentum", "grad_clip"}


def check_config(cfg: DictConfig) -> None:
    """Targets, recipe numbers and the run directory, before any data is loaded."""
    _check_node(cfg, "")
    check_metric_config(cfg.metric)
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ConfigError(f"paths.output_dir={out} is not writable ({err.strerror}); choose another run "
                          "directory with hydra.run.dir=...") from None


def _check_node(node, path: str) -> None:
    if isinstance(node, DictConfig):
        for key in node.keys():
            where = f"{path}.{key}" if path else str(key)
            value = node._get_node(key)._value()
            if key == "_target_":
                if not isinstance(value, str) or not value.startswith(ALLOWED_TARGETS):
                    raise ConfigError(f"{where}={value!r} is not allowed: targets must be in {list(ALLOWED_TARGETS)}")
            elif key in POSITIVE and isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
                raise ConfigError(f"{where}={value} must be > 0")
            elif key in NON_NEGATIVE and isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{where}={value} must be >= 0")
            elif key != "hydra":
                _check_node(node[key], where)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_node(item, f"{path}[{i}]")


def check_data(cfg: DictConfig, data: UnlearningDataModule) -> None:
    """The dataset config, the loaded data, the forget request and the model agree."""
    x = data.samples.x
    if list(x.shape[1:]) != list(cfg.dataset.input_shape):
        raise ConfigError(f"dataset.input_shape={list(cfg.dataset.input_shape)} but the data's samples have shape "
                          f"{list(x.shape[1:])}")
    if data.num_classes > cfg.dataset.num_classes:
        raise ConfigError(f"dataset.num_classes={cfg.dataset.num_classes} but the labels go up to "
                          f"{data.num_classes - 1}")
    unlearner = get_class(cfg.unlearner._target_)
    if not (isinstance(unlearner, type) and issubclass(unlearner, Unlearner)):
        raise ConfigError(f"unlearner._target_={cfg.unlearner._target_} is not an Unlearner subclass")
    y = data.samples.y
    for k, selector in enumerate(data.selectors):
        view = data.request(k)
        which = f"forget request {k + 1} of {len(data.selectors)}" if len(data.selectors) > 1 else "the forget request"
        lost = sorted(set(y[view.ids["forget"]].tolist()) - set(y[view.ids["retain"]].tolist()))
        if lost and getattr(selector, "func", selector) is not by_class:
            raise ConfigError(f"{which} removes every training sample of class(es) {lost}: the gold model could "
                              "never learn them; to forget whole classes use forget=class forget.classes=[...]")
        unlearner.check_request(view)
    model = instantiate(cfg.model)
    try:
        with torch.no_grad():
            out = model.eval()(x[:2])
    except RuntimeError as err:
        raise ConfigError(f"model={cfg.model._target_.rsplit('.', 1)[-1]} does not fit inputs of shape "
                          f"{list(x.shape[1:])}: {err}") from None
    if out.shape[1:] != (cfg.dataset.num_classes,):
        raise ConfigError(f"the model outputs {list(out.shape[1:])} logits per sample, expected "
                          f"[{cfg.dataset.num_classes}] (dataset.num_classes)")
