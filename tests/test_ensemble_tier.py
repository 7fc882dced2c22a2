"""metric=ensemble end to end (docs/metrics.md §11-§14) and the forget requests by difficulty (forget=memorized,
forget=subpopulation): they run, write their files, replay through forget_ids.txt, and mean what they say."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from mu_lightning.errors import ConfigError
from tests.test_procedures import undocumented

DIGITS_SHORT = ["dataset=digits", "logger=none", "train.epochs=10"]


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def forget_ids(run: Path) -> list[int]:
    return [int(s) for s in (run / "forget_ids.txt").read_text().split() if s.strip().isdigit()]


def test_ensemble_tier_writes_its_numbers_files_and_cost(run_pipeline, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    res = run_pipeline("metric=ensemble", "metric.ensemble.size=4", "train.epochs=3", "unlearner.epochs=1")
    m, run = res["metrics"], tmp_path / "run"
    for model in ("unlearn", "original", "gold"):
        for split in ("forget", "retain", "val"):
            assert m[f"{model}/klom_{split}"] <= m[f"{model}/klom_{split}_p99"] + 1e-12
            assert m[f"{model}/klom_{split}_p95"] <= m[f"{model}/klom_{split}_p99"] + 1e-12
    assert m["unlearn/klom_models"] == 4 and m["unlearn/ulira_shadows"] == 4
    assert not undocumented(m)
    cost = [r.message for r in caplog.records if r.message.startswith("ensemble N=4")]
    assert cost and "4 originals, 8 golds, 4 shadow originals" in cost[0] and "8 unlearning runs" in cost[0]
    n_forget = len(forget_ids(run))
    klom_rows = rows(run / "per_example_klom.csv")
    assert {r["split"] for r in klom_rows} == {"forget", "retain", "val"}
    assert sum(r["split"] == "forget" for r in klom_rows) == n_forget
    assert {int(r["sample_id"]) for r in klom_rows if r["split"] == "forget"} == set(forget_ids(run))
    assert len(rows(run / "per_example_ulira.csv")) == n_forget
    worst = rows(run / "worst_forget.csv")
    assert {r["metric"] for r in worst} == {"klom", "ulira_accuracy", "memorization"}
    top = max(float(r["klom"]) for r in klom_rows if r["split"] == "forget")
    assert float(next(r for r in worst if r["metric"] == "klom")["score"]) == pytest.approx(top, rel=1e-5)


def test_ensemble_settings_are_checked():
    from omegaconf import OmegaConf

    from mu_lightning.metrics.evaluate import check_config

    base = {"tier": "ensemble", "ensemble": {"size": 16, "worst": 0.01}}
    assert check_config(OmegaConf.create(base)) == "ensemble"
    with pytest.raises(ConfigError, match="metric.ensemble.size=2 is too few"):
        check_config(OmegaConf.merge(base, {"ensemble": {"size": 2}}))
    with pytest.raises(ConfigError, match="metric.ensemble.worst=1.0"):
        check_config(OmegaConf.merge(base, {"ensemble": {"worst": 1.0}}))


@pytest.mark.slow
def test_ensemble_tier_on_digits_with_16_members(run_pipeline, tmp_path):
    res = run_pipeline("metric=ensemble", "metric.ensemble.size=16", "logger=none", fast=False)
    m = res["metrics"]
    # the noise floor of retraining lies below what doing nothing scores on the forget set
    assert m["gold/klom_forget"] < m["original/klom_forget"]
    assert m["gold/klom_forget_p95"] < m["original/klom_forget_p95"]
    assert m["unlearn/ulira_shadows"] == 16 and 0 <= m["unlearn/ulira_accuracy"] <= 1
    assert 0 <= m["original/forget_memorization"] <= 1
    assert not undocumented(m)
    assert (tmp_path / "run" / "per_example_memorization.csv").exists()


def test_unknown_stratum_is_refused():
    from mu_lightning.data.forget import memorized

    with pytest.raises(ConfigError, match="forget.stratum='hard'"):
        memorized(torch.arange(10), torch.zeros(10), scores=lambda *a, **k: None, stratum="hard")
    with pytest.raises(ConfigError, match="needs the memorisation scores"):
        memorized(torch.arange(10), torch.zeros(10))


@pytest.mark.slow
def test_memorised_samples_are_missed_by_models_that_excluded_them(run_pipeline, tmp_path):
    from mu_lightning.cache import StageCache
    from mu_lightning.pipeline import build_data, run_ensembles
    from tests.helpers import compose_cfg

    picked = {}
    for stratum in ("high", "low"):
        res = run_pipeline("forget=memorized", "forget.count=40", "forget.members=8", f"forget.stratum={stratum}",
                           *DIGITS_SHORT, fast=False, out=stratum, shared_cache=True)
        assert res["metrics"]["unlearn/forget_acc"] is not None
        picked[stratum] = forget_ids(tmp_path / stratum)
        assert len(picked[stratum]) == 40
    # replayed through forget_ids.txt: the same request, no ensemble needed
    again = run_pipeline("forget=indices", f"forget.path={tmp_path / 'high' / 'forget_ids.txt'}", *DIGITS_SHORT,
                         fast=False, out="replay", shared_cache=True)
    assert forget_ids(tmp_path / "replay") == picked["high"]
    # an independent draw of shadow models (another seed of halves) agrees: the models that left the most memorised
    # samples out get them right far less often than the models that trained on them, and than the least memorised
    cfg = compose_cfg(tmp_path, DIGITS_SHORT, fast=False)
    data = build_data(cfg)
    ens = run_ensembles(cfg, StageCache(tmp_path / "independent"))
    masks, models = ens.shadows(data, 8, seed=7, first_seed=100)
    train = data.ids["train"]
    x, y = data.tensors("train")
    correct = np.stack([(mdl(x).argmax(1) == y).numpy() for mdl in models])
    included = masks.numpy()

    def accuracy(ids: list[int], inside: bool) -> float:
        cols = np.isin(train.numpy(), ids)
        sel = included[:, cols] if inside else ~included[:, cols]
        return float(correct[:, cols][sel].mean())

    assert accuracy(picked["high"], inside=False) < accuracy(picked["high"], inside=True) - 0.05
    assert accuracy(picked["high"], inside=False) < accuracy(picked["low"], inside=False) - 0.2
    assert again["metrics"]["gold/forget_acc"] < 0.8  # retraining without them misses many of them


@pytest.mark.slow
def test_subpopulation_is_a_cluster_and_replays(run_pipeline, tmp_path):
    res = run_pipeline("forget=subpopulation", "forget.count=30", "forget.seed=3", *DIGITS_SHORT, fast=False,
                       out="sub", shared_cache=True)
    ids = forget_ids(tmp_path / "sub")
    assert len(ids) == 30 and res["metrics"]["unlearn/forget_acc"] is not None
    from mu_lightning.data.sources import digits

    labels = digits().y[torch.tensor(ids)]
    assert labels.bincount().max() >= 0.8 * len(ids)  # neighbours in M's features: mostly one class (a random 30: ~3)
    again = run_pipeline("forget=indices", f"forget.path={tmp_path / 'sub' / 'forget_ids.txt'}", *DIGITS_SHORT,
                         fast=False, out="replay", shared_cache=True)
    assert forget_ids(tmp_path / "replay") == ids
    assert again["metrics"]["original/forget_acc"] == res["metrics"]["original/forget_acc"]


def test_a_model_made_elsewhere_is_refused_before_anything_trains(run_pipeline, tmp_path):
    from omegaconf import OmegaConf

    from mu_lightning.metrics.context import EvalContext
    from mu_lightning.metrics.ensemble import ensemble

    with pytest.raises(ConfigError, match=r"unlearned.checkpoint=u.pt with metric=ensemble: that tier unlearns N "):
        run_pipeline("metric=ensemble", "unlearned.checkpoint=u.pt")
    assert not (tmp_path / "run" / "results.json").exists() and not list((tmp_path / "run").glob("**/*.ckpt"))
    assert not any(p.suffix == ".pt" for p in tmp_path.rglob("*"))  # no stage trained or cached
    ctx = EvalContext(models={}, data=None, stages={"original": {"seed": 0}, "unlearn": {}}, seconds={},
                      cfg=OmegaConf.create({"ensemble": {"size": 4}}), gold=None, unlearned=None, fresh_model=None,
                      ensembles=None)
    with pytest.raises(ConfigError, match="needs the pipeline's ensembles"):
        ensemble(ctx)
