"""Helpers shared by the tests: the composed Hydra config and the set-up datamodule that ``python train.py``
would use. Fixtures live in ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# Small and fast: synthetic data, few epochs. Tests add their own overrides after these.
FAST = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=8", "logger=none"]


def compose_cfg(tmp_path: Path, overrides: list[str] = (), fast: bool = True) -> DictConfig:
    """The config ``python train.py <overrides>`` would run, writing into ``tmp_path/run`` and ``tmp_path/cache``."""
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*(FAST if fast else []), *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    given = {o.split("=", 1)[0] for o in overrides}
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        for key, default in (("output_dir", tmp_path / "run"), ("cache_dir", tmp_path / "cache")):
            if f"paths.{key}" not in given:
                cfg.paths[key] = str(default)
        del cfg.hydra
    return cfg


def make_data(tmp_path: Path, *overrides: str):
    """The set-up UnlearningDataModule that ``python train.py <overrides>`` would build."""
    from hydra.utils import instantiate

    from mu_lightning.data import UnlearningDataModule

    cfg = compose_cfg(tmp_path, list(overrides), fast=False)
    data = UnlearningDataModule(source=instantiate(cfg.dataset.source), forget=instantiate(cfg.forget),
                                test_fraction=cfg.dataset.test_fraction, val_fraction=cfg.dataset.val_fraction,
                                split_seed=cfg.dataset.split_seed)
    data.setup()
    return data


def two_rank_results(rank_fn, out: Path) -> list:
    """Run ``rank_fn(rank, port, str(out))`` in two spawned processes joined over a free local port (gloo), each
    saving what it measured to ``<out>.<rank>``; what each rank saved."""
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_fn, args=(port, str(out)), nprocs=2)
    return [torch.load(f"{out}.{rank}") for rank in (0, 1)]
