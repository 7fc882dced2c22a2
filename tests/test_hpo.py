"""hparams_search: the objective the sweeper minimises, the two selections (oracle against gold, gold-free), the
search configs, and tiny Optuna studies (in memory, and on sqlite)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn

from mu_lightning.errors import ConfigError
from mu_lightning.metrics.context import EvalContext
from mu_lightning.metrics.validation import gold_free_gap, validation
from mu_lightning.models import MLP
from mu_lightning.tuning import objective as hpo
from tests.helpers import compose_cfg, make_data

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml"))
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=3", "logger=none"]
DIGITS = ["dataset=digits", "train.epochs=5", "logger=none"]  # an original that memorises: the MIAs are informative
# the objective and tuning label of each generic search config (the <method>_optuna names are optuna's)
SELECTS = {"optuna": ("unlearn/avg_gap_val", "gold-tuned"),
           "optuna_gold_free": ("unlearn/gold_free_gap_val", "gold-free")}


@pytest.mark.parametrize(("objective", "message"), [
    ("avg_gap_val", "objective='avg_gap_val' is not a metric name: use <model>/<metric>"),
    ("teacher/avg_gap", "objective='teacher/avg_gap' is not a metric name"),
])
def test_bad_objective_names_are_refused(tmp_path, objective, message):
    with pytest.raises(ConfigError, match=message):
        hpo.check_objective(compose_cfg(tmp_path, [f"objective={objective}"]))


@pytest.mark.parametrize("objective", ["unlearn/avg_gap_val", "unlearn/gold_free_gap_val"])
def test_validation_objective_needs_a_validation_split(tmp_path, objective):
    cfg = compose_cfg(tmp_path, [f"objective={objective}", "dataset.val_fraction=0"])
    with pytest.raises(ConfigError, match=f"objective={objective} needs a validation split.*val_fraction=0"):
        hpo.check_objective(cfg)


@pytest.mark.parametrize(("objective", "tuning", "message"), [
    ("unlearn/gold_free_gap_val", "gold-tuned", "tuning=gold-tuned does not fit objective=unlearn/gold_free_gap_val, "
     "whose selection is gold-free (computed without the gold model): use tuning=gold-free"),
    ("unlearn/avg_gap_val", "gold-free", "tuning=gold-free does not fit objective=unlearn/avg_gap_val, whose "
     "selection is oracle (it reads the gold model): use tuning=gold-tuned"),
    ("unlearn/forget_acc", "gold-free", "whose selection is oracle"),  # only the listed metrics are gold-free
])
def test_a_tuning_label_that_contradicts_the_objective_is_refused(tmp_path, objective, tuning, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        hpo.check_objective(compose_cfg(tmp_path, [f"objective={objective}", f"tuning={tuning}"]))


def test_selection_follows_the_objective():
    assert [hpo.selection(o) for o in (None, "unlearn/avg_gap_val", "unlearn/gold_free_gap_val",
                                       "original/gold_free_gap_val", "unlearn/test_acc")] == [
        None, "oracle", "gold-free", "gold-free", "oracle"]


def test_objective_missing_from_results_lists_what_there_is(tmp_path):
    cfg = compose_cfg(tmp_path, ["objective=unlearn/nonsense"])
    with pytest.raises(ConfigError, match="objective=unlearn/nonsense is not a metric of this run; it has unlearn/a"):
        hpo.objective_value(cfg, {"metrics": {"unlearn/a": 1.0, "gold/b": 2.0}})
    assert hpo.objective_value(compose_cfg(tmp_path), {"metrics": {}}) is None  # no objective: nothing returned


def test_a_null_objective_is_the_worst_value_not_a_crash(tmp_path):
    """avg_gap_val is null when an MIA attack is at chance (docs/metrics.md §3.1); Optuna cannot take None or NaN."""
    cfg = compose_cfg(tmp_path, ["objective=unlearn/avg_gap_val"])
    assert hpo.objective_value(cfg, {"metrics": {"unlearn/avg_gap_val": None}}) == math.inf
    assert hpo.objective_value(cfg, {"metrics": {"unlearn/avg_gap_val": 2}}) == 2.0


def test_validation_gap_is_reported_and_labelled(run_pipeline):
    """M_u = M under unlearner=none, so their gaps to gold on D_val agree; the test-split gap is another number."""
    r = run_pipeline("unlearner=none", "objective=unlearn/avg_gap_val", "tuning=gold-tuned", *DIGITS,
                     fast=False, shared_cache=True)
    m = r["metrics"]
    assert m["unlearn/avg_gap_val"] == pytest.approx(m["original/avg_gap_val"], abs=1e-9)
    assert m["unlearn/avg_gap_val"] > 0 and m["unlearn/avg_gap_val"] != pytest.approx(m["unlearn/avg_gap"])
    assert r["tuning"] == "gold-tuned" and r["config"]["tuning"] == "gold-tuned"
    assert (r["selection"], r["objective"]) == ("oracle", "unlearn/avg_gap_val")
    plain = run_pipeline("unlearner=none", *DIGITS, out="plain", fast=False, shared_cache=True)
    assert "unlearn/avg_gap_val" not in plain["metrics"] and plain["tuning"] is None
    assert plain["selection"] is None and plain["objective"] is None


def test_gold_free_gap_is_reported_from_the_accuracies_and_labelled(run_pipeline):
    """A random request: the targets are M's validation accuracy (forget, val) and M's retain accuracy, so the metric
    follows from the accuracies results.json reports."""
    r = run_pipeline("unlearner=finetune", "unlearner.epochs=2", "objective=unlearn/gold_free_gap_val",
                     "tuning=gold-free", *SMALL, shared_cache=True)
    m = r["metrics"]
    by_hand = 100 / 3 * (abs(m["unlearn/forget_acc"] - m["original/val_acc"])
                         + abs(m["unlearn/retain_acc"] - m["original/retain_acc"])
                         + abs(m["unlearn/val_acc"] - m["original/val_acc"]))
    assert m["unlearn/gold_free_gap_val"] == pytest.approx(by_hand, abs=1e-9) and by_hand > 0
    assert "unlearn/avg_gap_val" not in m  # the oracle metric is not computed for a gold-free selection
    assert (r["selection"], r["objective"], r["tuning"]) == ("gold-free", "unlearn/gold_free_gap_val", "gold-free")


class Table(nn.Module):
    """A "model" whose logits for sample i are row i of ``table``: the input is the sample's id."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, x):
        return self.table[x[:, 0].long()]


def table_context(labels: list[int], splits: dict[str, list[int]], right: dict[str, set[int]]) -> EvalContext:
    """Samples 0..n-1 with ``labels``; model m predicts sample i right iff i is in ``right[m]`` (else the next
    class); the splits hold the given sample ids."""
    y, classes = torch.tensor(labels), max(labels) + 1
    ids = {s: torch.tensor(i) for s, i in splits.items()}

    def model(correct: set[int]) -> Table:
        pred = [c if i in correct else (c + 1) % classes for i, c in enumerate(labels)]
        return Table(torch.nn.functional.one_hot(torch.tensor(pred), classes).float())

    data = SimpleNamespace(samples=SimpleNamespace(y=y), ids=ids,
                           tensors=lambda s: (ids[s].float().unsqueeze(1), y[ids[s]]))
    return EvalContext(models={m: model(c) for m, c in right.items()}, data=data, stages={}, seconds={}, cfg=None,
                       gold=None, unlearned=None, fresh_model=None)


def test_gold_free_gap_by_hand_for_a_random_request():
    """D_r holds every class. Targets: forget = val = M's val accuracy 4/5, retain = M's 6/6. M_u: forget 2/4,
    retain 5/6, val 3/5, so the gaps are 0.3, 1/6, 0.2; M's: 0.2, 0, 0."""
    ctx = table_context([0, 1, 2, 0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2],
                        {"forget": [0, 1, 2, 3], "retain": [4, 5, 6, 7, 8, 9], "val": [10, 11, 12, 13, 14]},
                        {"original": set(range(14)), "unlearn": {0, 1, 4, 5, 6, 7, 8, 10, 11, 12}})
    assert gold_free_gap(ctx, "unlearn") == pytest.approx(100 * (0.3 + 1 / 6 + 0.2) / 3)
    assert gold_free_gap(ctx, "original") == pytest.approx(100 * 0.2 / 3)


def test_gold_free_gap_by_hand_for_a_class_request():
    """Class 2 forgotten (D_r has none): forget target 0; M is right on 2 of the 3 val samples of classes 0 and 1, so
    the val target is 2/3 × 3/5 = 0.4, the retain target M's 1. M_u: forget 1/3, retain 3/4, val 2/5 (0.4)."""
    ctx = table_context([2, 2, 2, 0, 1, 0, 1, 0, 1, 2, 2, 0],
                        {"forget": [0, 1, 2], "retain": [3, 4, 5, 6], "val": [7, 8, 9, 10, 11]},
                        {"original": {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "unlearn": {0, 3, 4, 5, 7, 9}})
    assert gold_free_gap(ctx, "unlearn") == pytest.approx(100 * (1 / 3 + 1 / 4 + 0) / 3)
    assert gold_free_gap(ctx, "original") == pytest.approx(100 * (1 + 0 + abs(4 / 5 - 0.4)) / 3)


class Exploding(nn.Module):
    """A gold model that fails the moment anything evaluates it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        raise RuntimeError("the gold model was read")


def test_the_gold_free_metric_never_reads_the_gold_model(tmp_path):
    """The same value with the trained-like gold, with garbage weights, and with a gold model that raises when run;
    the oracle metric, which does read gold, fails on the last one."""
    data = make_data(tmp_path, *SMALL)
    torch.manual_seed(0)
    shape, classes = list(data.samples.x.shape[1:]), data.num_classes
    models = {m: MLP(shape, classes) for m in ("original", "gold", "unlearn")}
    garbage = MLP(shape, classes)
    with torch.no_grad():
        for p in garbage.parameters():
            p.normal_(0, 100)
    cfg = compose_cfg(tmp_path).metric
    values = []
    for gold in (models["gold"], garbage, Exploding()):
        ctx = EvalContext(models={**models, "gold": gold}, data=data, stages={}, seconds={}, cfg=cfg, gold=None,
                          unlearned=None, fresh_model=None)
        values.append(validation(ctx, "unlearn/gold_free_gap_val"))
        assert not any(model == "gold" for model, _ in ctx._logits)
    assert values[0] == values[1] == values[2] and set(values[0]) == {"original/gold_free_gap_val",
                                                                      "unlearn/gold_free_gap_val"}
    with pytest.raises(RuntimeError, match="the gold model was read"):
        validation(ctx, "unlearn/avg_gap_val")


@pytest.mark.parametrize("preset", PRESETS)
def test_search_configs_compose_with_the_method_search_space(preset):
    """Each search config tunes the method's declared space; the earlier <method>_optuna names tune that method."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
    method = preset.removesuffix("_optuna") if preset not in SELECTS else "finetune"
    objective, tuning = SELECTS.get(preset, SELECTS["optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "minimize"
    assert (cfg.objective, cfg.tuning, cfg.hydra.runtime.choices.unlearner) == (objective, tuning, method)
    assert cfg.hydra.sweeper.study_name == f"{method}_{objective.split('/')[1]}"
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params and params == OmegaConf.to_container(cfg.unlearner.search)
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, f"{preset} tunes {key}, which the config does not have"


@pytest.mark.parametrize("selection", ["optuna", "optuna_gold_free"])
def test_another_method_brings_its_own_search_space(selection):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={selection}", "unlearner=ssd"], return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == {
        "unlearner.selection_weighting": "tag(log, interval(1.0, 100.0))",
        "unlearner.dampening_constant": "tag(log, interval(0.1, 10.0))"}
    assert cfg.hydra.sweeper.study_name == f"ssd_{SELECTS[selection][0].split('/')[1]}"


@pytest.mark.slow
def test_tiny_optuna_study_on_sqlite(tmp_path):
    """Two trials stored in sqlite (optuna 2.10 needs sqlalchemy<2 there): the best value is the best trial's."""
    optuna = pytest.importorskip("optuna")
    sweep, db = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "hparams_search=finetune_optuna",
                          "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={db}", f"hydra.sweep.dir={sweep}",
                          *SMALL, f"paths.cache_dir={tmp_path / 'cache'}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(2)]
    assert all(t["tuning"] == "gold-tuned" for t in trials)
    # a null Avg. Gap (an MIA at chance on D_val) reaches the sweeper as +inf (objective_value)
    gaps = [math.inf if t["metrics"]["unlearn/avg_gap_val"] is None else t["metrics"]["unlearn/avg_gap_val"]
            for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(gaps))
    study = optuna.load_study(study_name="finetune_avg_gap_val", storage=db)
    assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == pytest.approx(sorted(gaps))


@pytest.mark.slow
def test_a_gold_free_search_is_labelled_in_results_and_summary(tmp_path):
    """hparams_search=optuna_gold_free: every trial records selection gold-free, the summary's tuning column says so
    and its rows are sorted by the gold-free objective."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "hparams_search=optuna_gold_free", "unlearner=ssd",
                          "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", *DIGITS, "callbacks=none",
                          f"paths.cache_dir={tmp_path / 'cache'}"], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(2)]
    assert all((t["selection"], t["objective"], t["tuning"]) == ("gold-free", "unlearn/gold_free_gap_val", "gold-free")
               for t in trials)
    gaps = [t["metrics"]["unlearn/gold_free_gap_val"] for t in trials]
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == pytest.approx(min(gaps))
    summary = (sweep / "summary.md").read_text()
    assert "| gold-free |" in summary and "sorted by the search objective `gold_free_gap_val`" in summary
