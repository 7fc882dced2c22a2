"""The config group is the registry (docs/design.md, "Conventions for contributors"): each conf/unlearner/*.yaml
names an ``Unlearner`` subclass whose file, class and config names say the same thing, and every exported method
has a config."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import mu_lightning.unlearners as unlearners
from mu_lightning.data import SPLITS
from mu_lightning.models import MLP
from mu_lightning.unlearners import Unlearner
from tests.helpers import compose_cfg

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "conf" / "unlearner").glob("*.yaml"))
# ``None`` is Python's constant, so the do-nothing baseline's class says what it does instead
CLASS_FOR = {"none": "NoUnlearning"}


def squash(name: str) -> str:
    return name.replace("_", "").lower()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_names_an_unlearner_of_the_same_name(path):
    target = OmegaConf.load(path)["_target_"]
    package, _, class_name = target.rpartition(".")
    assert package == "mu_lightning.unlearners", f"{path.name}: _target_ must be exported from {package}"
    cls = getattr(unlearners, class_name)
    assert isinstance(cls, type) and issubclass(cls, Unlearner)
    assert cls.__module__ == f"mu_lightning.unlearners.{path.stem}", "file name and config name differ"
    assert class_name == CLASS_FOR.get(path.stem, class_name) and (
        path.stem in CLASS_FOR or squash(class_name) == squash(path.stem)), "class name and config name differ"
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# ") and f"python train.py unlearner={path.stem}" in first_line


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    """The composed default config, composed once: each unlearner file is swapped in (as Hydra would) below."""
    return compose_cfg(tmp_path_factory.mktemp("registry"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_instantiates_with_documented_reads(path, base_cfg):
    cfg = base_cfg.copy()
    cfg.unlearner = OmegaConf.load(path)  # its interpolations (eu_k's ${train.*}) resolve against the whole config
    unlearner = instantiate(cfg.unlearner, model=MLP([1, 8, 8], 10))
    assert isinstance(unlearner, Unlearner)
    assert set(unlearner.reads) <= set(SPLITS) and "gold" not in vars(unlearner)
    assert "reads" in (type(unlearner).__doc__ or "").lower(), "the class docstring must say which sets it reads"


def method_classes() -> dict[str, type]:
    """Every ``Unlearner`` subclass defined in a module of the package, by walking its files (not its exports)."""
    found = {}
    for module in pkgutil.iter_modules(unlearners.__path__):
        loaded = importlib.import_module(f"mu_lightning.unlearners.{module.name}")
        found.update({f"mu_lightning.unlearners.{name}": obj for name, obj in vars(loaded).items()
                      if isinstance(obj, type) and issubclass(obj, Unlearner) and obj.__module__ == loaded.__name__
                      and module.name != "base"})  # the bases are no method
    return found


def test_every_unlearner_class_is_exported_and_has_a_config():
    targets = {OmegaConf.load(p)["_target_"] for p in CONFIGS}
    defined = method_classes()
    assert defined and all(getattr(unlearners, path.rsplit(".", 1)[1]) is cls for path, cls in defined.items())
    assert not set(defined) - targets, (f"methods without a config: {sorted(set(defined) - targets)}; write "
                                        "conf/unlearner/<name>.yaml (docs/methods.md, \"Adding a method\")")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_option_has_a_type_so_no_value_goes_unchecked(path):
    """Option types come from the ``__init__`` annotations (``Unlearner.check_option_values``): an unannotated
    option would accept any value silently."""
    cls = getattr(unlearners, OmegaConf.load(path)["_target_"].rsplit(".", 1)[1])
    untyped = [o for o in cls.options() if o not in cls.option_types()]
    assert not untyped, (f"{cls.__name__}: annotate {untyped} in __init__ (docs/methods.md, \"Adding a method\")")

