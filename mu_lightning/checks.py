"""Every check that runs before any training, called from here: a bad config or input fails early, with a message
that names the option, the bad value and what is allowed.

The pipeline calls ``check_config`` first (the config alone: targets, recipe numbers, metric tier, objective,
threads, DDP strategy, run directory), then builds the data (forget selectors and the datamodule check their own
arguments as they are made) and calls ``check_data`` (data, forget requests, unlearner and model agree; the stage
cache's directory). A check that belongs to another module lives there and is called from here.
"""

from __future__ import annotations

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.forget import by_class
from mu_lightning.distributed import check_strategy
from mu_lightning.errors import ConfigError
from mu_lightning.files import check_writable
from mu_lightning.hpo import check_objective
from mu_lightning.metrics import check_config as check_metric_config
from mu_lightning.threads import check_threads
from mu_lightning.targets import check_targets
from mu_lightning.unlearners import Unlearner

POSITIVE = {"lr", "batch_size"}
NON_NEGATIVE = {"epochs", "weight_decay", "momentum", "grad_clip"}


def check_config(cfg: DictConfig) -> None:
    """The config alone, before any rank starts or any data is loaded: targets, recipe numbers, the metric tier, the
    sweep objective, ``threads``, the DDP strategy and the run directory."""
    check_targets(cfg)  # what each _target_ resolves to, and no switched-off safety (targets.py)
    _check_node(cfg, "")
    check_metric_config(cfg.metric)
    check_objective(cfg)
    check_threads(cfg)
    check_strategy(cfg)
    check_writable(cfg.paths.output_dir, "paths.output_dir", "choose another run directory with hydra.run.dir=...")


def _check_node(node, path: str) -> None:
    if isinstance(node, DictConfig):
        for key in node.keys():
            where = f"{path}.{key}" if path else str(key)
            value = node._get_node(key)._value()
            if key in POSITIVE and isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
                raise ConfigError(f"{where}={value} must be > 0")
            elif key in NON_NEGATIVE and isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{where}={value} must be >= 0")
            elif key != "hydra":
                _check_node(node[key], where)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_node(item, f"{path}[{i}]")


def check_data(cfg: DictConfig, data: UnlearningDataModule) -> None:
    """The dataset config, the loaded data, the forget requests, the unlearner and the model agree; the stage cache
    (``cache=true``) can write its directory."""
    _check_samples(cfg, data)
    _check_requests(cfg, data)
    _check_model(cfg, data.samples.x)
    if cfg.cache:
        check_writable(cfg.paths.cache_dir, "paths.cache_dir", "choose another directory or run with cache=false")


def _check_samples(cfg: DictConfig, data: UnlearningDataModule) -> None:
    x = data.samples.x
    if list(x.shape[1:]) != list(cfg.dataset.input_shape):
        raise ConfigError(f"dataset.input_shape={list(cfg.dataset.input_shape)} but the data's samples have shape "
                          f"{list(x.shape[1:])}")
    if data.num_classes > cfg.dataset.num_classes:
        raise ConfigError(f"dataset.num_classes={cfg.dataset.num_classes} but the labels go up to "
                          f"{data.num_classes - 1}")


def _check_requests(cfg: DictConfig, data: UnlearningDataModule) -> None:
    unlearner = get_class(cfg.unlearner._target_)
    if not (isinstance(unlearner, type) and issubclass(unlearner, Unlearner)):
        raise ConfigError(f"unlearner._target_={cfg.unlearner._target_} is not an Unlearner subclass")
    unlearner.check_options([k for k in cfg.unlearner if not str(k).startswith("_")])
    y = data.samples.y
    for k, selector in enumerate(data.selectors):
        view = data.request(k)
        which = f"forget request {k + 1} of {len(data.selectors)}" if len(data.selectors) > 1 else "the forget request"
        lost = sorted(set(y[view.ids["forget"]].tolist()) - set(y[view.ids["retain"]].tolist()))
        if lost and getattr(selector, "func", selector) is not by_class:
            raise ConfigError(f"{which} removes every training sample of class(es) {lost}: the gold model could "
                              "never learn them; to forget whole classes use forget=class forget.classes=[...]")
        unlearner.check_request(view)


def _check_model(cfg: DictConfig, x: torch.Tensor) -> None:
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
