"""Command-line entry (``python train.py`` and ``mu-train``): Hydra composes the config, the pipeline runs it."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from mu_lightning.errors import ConfigError

log = logging.getLogger("mu_lightning")


@hydra.main(version_base="1.3", config_path="pkg://mu_lightning.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from mu_lightning.pipeline import run  # imported here so --help and config errors answer fast

    try:
        run(cfg)
    except ConfigError as err:
        log.error("error: %s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
