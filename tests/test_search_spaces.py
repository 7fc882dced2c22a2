"""Every method's search space, the ``search:`` block of ``conf/unlearner/<name>.yaml`` (docs/methods.md, "Tuning on
your data"): each key an option of the method that a trial can set, each range around the config's own value, every
corner of it a method that builds, read by Optuna as intended; ``check_search`` refuses a bad block with a one-line
message. The slow test runs ``hparams_search=optuna`` for every method, two trials each, on digits."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mu_lightning.errors import ConfigError
from mu_lightning.tuning import objective as hpo
from mu_lightning.tuning.search import check_search, search_space

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (ROOT / "conf" / "unlearner").glob("*.yaml"))
PROCEDURE = 'docs/methods.md, "Tuning on your data"'


@cache
def general(name: str, *overrides: str) -> DictConfig:
    """The config of ``unlearner=<name>`` with its general values (no protocol file), as a method's search is around
    them."""
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        return compose("config", overrides=[f"unlearner={name}", "~protocol@unlearner", *overrides])


def with_values(cfg: DictConfig, values: dict) -> DictConfig:
    """The unlearner config, resolved, with ``values`` (``{"unlearner.optimizer.lr": 0.1}``) set as a trial would."""
    root = OmegaConf.create({"unlearner": OmegaConf.to_container(cfg.unlearner, resolve=True)})
    for key, value in values.items():
        OmegaConf.update(root, key, value, merge=False)
    return root.unlearner


def corners(space: dict) -> list[dict]:
    """Every combination of the searched keys' end values (both ends of a range, every choice)."""
    combos = [{}]
    for key, searched in space.items():
        combos = [{**combo, key: value} for combo in combos for value in searched.values]
    return combos


@pytest.mark.parametrize("name", NAMES)
def test_every_method_declares_its_search_space(name):
    cfg = general(name)
    assert "search" in cfg.unlearner, f"conf/unlearner/{name}.yaml has no search: block; follow {PROCEDURE}"
    space = check_search(cfg)
    assert bool(space) == (name != "none"), f"{name}: declare the ranges worth searching ({PROCEDURE})"
    assert all(s.kind != "fixed" for s in space.values()), f"{name}: a search block holds ranges, not fixed values"


@pytest.mark.parametrize("name", [n for n in NAMES if n != "none"])
def test_each_range_is_around_the_config_value(name):
    """The config's (the paper's) value is a point of its range; a learning rate is searched on a log scale wherever
    the method has its own, and a training method searches how long it trains."""
    cfg = general(name)
    if "search" not in cfg.unlearner:
        pytest.skip("no search: block (test_every_method_declares_its_search_space fails for it)")
    space = check_search(cfg)
    for key, searched in space.items():
        value = OmegaConf.select(cfg, key)
        assert searched.contains(value), f"{name}: {key}={value} lies outside its search range {searched.text}"
    optimizer = cfg.unlearner.get("optimizer")
    if optimizer is not None and not OmegaConf.is_interpolation(cfg.unlearner, "optimizer"):
        lr = space.get("unlearner.optimizer.lr")
        assert lr is not None and lr.kind == "interval" and lr.log, f"{name}: search the lr on a log scale"
    if optimizer is not None:
        assert any(k.endswith("epochs") for k in space), f"{name} trains: search its epochs"


@pytest.mark.parametrize("name", NAMES)
def test_every_corner_of_the_search_builds_the_method(name):
    """Ranges that meet (SCRUB's msteps <= epochs, CF-k's k against the model's blocks) hold at every extreme."""
    cfg = general(name)
    model = instantiate(cfg.model)
    for values in corners(search_space(cfg.unlearner)):
        try:
            instantiate(with_values(cfg, values), model=model)
        except Exception as err:  # noqa: BLE001 - name the combination that failed
            pytest.fail(f"{name} with {values}: {getattr(err, '__cause__', None) or err}")


@pytest.mark.parametrize("name", [n for n in NAMES if n != "none"])
def test_optuna_reads_each_range_as_intended(name):
    """The sweeper's own parser: a log interval is log-uniform, a range an integer range with both ends included."""
    _impl = pytest.importorskip("hydra_plugins.hydra_optuna_sweeper._impl")
    from optuna.distributions import IntUniformDistribution, LogUniformDistribution

    space = search_space(general(name).unlearner)
    dists, fixed = _impl.create_params_from_overrides([f"{k}={s.text}" for k, s in space.items()])
    assert not fixed and set(dists) == set(space)
    for key, searched in space.items():
        dist = dists[key]
        assert isinstance(dist, LogUniformDistribution) == searched.log, key
        if searched.kind == "range":
            assert isinstance(dist, IntUniformDistribution) and (dist.low, dist.high) == searched.values, key
        else:
            assert (dist.low, dist.high) == pytest.approx(searched.values), key


@pytest.mark.parametrize(("name", "search", "message"), [
    ("finetune", {"unlearner.alhpa": "interval(0.1, 0.9)"},
     "unlearner.search: unlearner.alhpa is not an option of Finetune: search unlearner.<option> with option one of "
     "epochs, batch_size"),
    ("finetune", {"unlearner.optimizer.llr": "interval(0.1, 0.2)"},
     "unlearner.search: unlearner.optimizer.llr is not in the config: Finetune's config has no "
     "unlearner.optimizer.llr"),
    ("finetune", {"unlearner.optimizer.lr": "intervall(0.1, 0.2)"},
     "unlearner.search: unlearner.optimizer.lr=intervall(0.1, 0.2) is not a search range: use interval(low, high)"),
    ("finetune", {"unlearner.optimizer.lr": "interval(0.1, 0.01)"},
     "unlearner.search: unlearner.optimizer.lr=interval(0.1, 0.01) is empty or not on a log scale: it needs low < "
     "high"),
    ("finetune", {"unlearner.optimizer.lr": "tag(log, interval(0, 0.1))"}, "it needs low < high and low > 0"),
    ("finetune", {"unlearner.epochs": "tag(log, range(1, 5))"},
     "unlearner.search: unlearner.epochs=tag(log, range(1, 5)): tag(log, ...) applies to interval() only"),
    ("finetune", {"unlearner.epochs": "interval(1, 5)"},
     "unlearner.search: unlearner.epochs=interval(1, 5) reaches 1.0: unlearner.epochs=1.0 is not allowed: "
     "Finetune's epochs takes an integer"),
    ("finetune", {"unlearner.epochs": "glob(*)"}, "is not a range Optuna's sweeper takes"),
    ("eu_k", {"unlearner.optimizer.lr": "tag(log, interval(0.001, 0.1))"},
     "unlearner.search: unlearner.optimizer.lr cannot be searched: unlearner.optimizer is ${train.optimizer}, an "
     "interpolation a trial cannot override below"),
    ("finetune", 3, "unlearner.search=3 is not a mapping: give each searched key"),
])
def test_a_bad_search_block_is_refused_with_one_line(name, search, message):
    cfg = general(name).copy()
    with open_dict(cfg):
        cfg.unlearner.search = search
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")) as err:
        check_search(cfg)
    assert "\n" not in str(err.value)


def test_a_search_run_checks_the_search_before_training(tmp_path):
    cfg = general("ssd", "objective=unlearn/avg_gap_val").copy()
    with open_dict(cfg):
        cfg.unlearner.search = {"unlearner.selection_weigthing": "interval(1.0, 10.0)"}
    with pytest.raises(ConfigError, match="unlearner.selection_weigthing is not an option of SSD"):
        hpo.check_objective(cfg)


# --- every method's search, run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One stage cache for the whole walk: the original and the gold models train once per forget request."""
    return tmp_path_factory.mktemp("search-cache")


def documented_command(name: str) -> list[str]:
    """The overrides of the command the config's first line gives (``python train.py unlearner=unsir forget=class
    forget.classes=[3]``): the setting the method is meant for, digits unless it says otherwise."""
    first = (ROOT / "conf" / "unlearner" / f"{name}.yaml").read_text().splitlines()[0]
    return [word for word in first.split("python train.py", 1)[1].split() if "=" in word]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_method_runs_a_two_trial_search_on_digits(name, tmp_path, shared_cache):
    """``hparams_search=optuna`` over the command the method's config documents (digits; UNSIR: a class request):
    two trials whose searched values come from the method's space, the best value being the best trial's objective
    (a null objective counts as the worst, +inf)."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep, lm = tmp_path / "sweep", name.startswith("lm_")
    # a language model has no accuracy-based Avg. Gap: its oracle objective is TOFU's forget quality, maximised
    objective = ["objective=unlearn/forget_quality", "hydra.sweeper.direction=maximize"] if lm else []
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *documented_command(name), "hparams_search=optuna",
                          *objective,
                          "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", "logger=none", "callbacks=none",
                          "extras.print_config=false", "~hydra.callbacks.aggregate",
                          f"paths.cache_dir={shared_cache}"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(2)]
    metric = "unlearn/forget_quality" if lm else "unlearn/avg_gap_val"
    assert all((t["selection"], t["objective"], t["tuning"]) == ("oracle", metric, "gold-tuned") for t in trials)
    space = search_space(general(name).unlearner)
    for t in trials:
        tried = OmegaConf.create({"unlearner": t["config"]["unlearner"]})
        assert all(space[k].contains(OmegaConf.select(tried, k)) for k in space), (name, t["config"]["unlearner"])
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == set(space)
    values = [t["metrics"][metric] for t in trials]
    if lm:
        assert best["best_value"] == pytest.approx(max(-math.inf if v is None else v for v in values))
    else:
        assert best["best_value"] == pytest.approx(min(math.inf if v is None else v for v in values))
