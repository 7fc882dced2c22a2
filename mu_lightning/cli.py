"""Command-line entry (``python train.py`` and ``mu-train``): Hydra composes the config, the pipeline runs it."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mu_lightning.errors import ConfigError
from mu_lightning.targets import guard_command_line

log = logging.getLogger("mu_lightning")


@guard_command_line  # Hydra acts on its own settings before main runs: check them first (targets.py)
@hydra.main(version_base="1.3", config_path="pkg://mu_lightning.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one experiment; returns the configured ``objective`` (for a sweeper such as Optuna), or None."""
    from mu_lightning import distributed, hpo
    from mu_lightning.pipeline import run  # imported here so --help and config errors answer fast

    ok = False
    try:
        results = run(cfg)  # None on DDP ranks > 0
        ok = True
        return hpo.objective_value(cfg, results)
    except (ConfigError, OSError) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job and the sweep goes on with the others
        if isinstance(err, ConfigError):
            log.error("error: %s", err)
            sys.exit(2)
        log.error("error: %s (%s); the stage cache is unaffected", err.strerror, err.filename)
        sys.exit(1)
    finally:
        distributed.finish(ok)  # DDP: end this job's process group so a sweep's next job starts fresh ranks


if __name__ == "__main__":
    main()
