"""The evaluation step end to end: every tier writes its metrics to results.json under one naming scheme."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import CACHE, check_config, mia

PER_MODEL = ("forget_acc", "retain_acc", "val_acc", "test_acc", "mia_efficacy", "mia_entropy_member_rate",
             "mia_loss_auc", "mia_loss_tpr_at_1fpr")
GOLD_RELATIVE = tuple(f"gold_{k}_{s}" for k in ("agreement", "js", "kl", "actdist") for s in ("forget", "test")) + (
    "mia_loss_auc_gap", "weight_dist_gold", "avg_gap", "tow", "tow_mia")
FULL = ("mia_retain_privacy", "mia_retain_auc", "mia_efficacy_mentr", "ks_pvalue", "ks_stat", "phi_zscore", "zrf",
        "relearn_steps")


def test_fast_tier(run_pipeline):
    res = run_pipeline(shared_cache=True)
    m, st = res["metrics"], res["stages"]
    for model in ("original", "gold", "unlearn"):
        for k in PER_MODEL:
            assert 0.0 <= m[f"{model}/{k}"] <= 1.0, k
    for model in ("original", "unlearn"):
        assert all(f"{model}/{k}" in m for k in GOLD_RELATIVE)
        assert 0 <= m[f"{model}/gold_js_forget"] <= math.log(2) and 0 <= m[f"{model}/gold_actdist_test"] <= 2**0.5
    assert not any(f"gold/{k}" in m for k in GOLD_RELATIVE)  # the floor needs other gold seeds: metric=seeds
    assert not any(k.endswith(("/zrf", "/rmia_auc")) for k in m)
    # retraining time is the gold model's recorded fit time, also on a cache hit
    assert m["gold/train_seconds"] == st["gold"]["fit_seconds"]
    assert m["unlearn/speedup_recorded"] == pytest.approx(st["gold"]["fit_seconds"] / res["seconds"]["unlearn"])
    assert m["unlearn/grad_step_ratio"] == st["unlearn"]["steps"] / st["gold"]["steps"]
    assert m["unlearn/weight_dist_original"] > 0


def test_none_unlearner_scores_like_the_original(run_pipeline):
    m = run_pipeline("unlearner=none", shared_cache=True)["metrics"]
    for k in (*PER_MODEL, *GOLD_RELATIVE):
        assert m[f"unlearn/{k}"] == pytest.approx(m[f"original/{k}"]), k
    assert m["unlearn/weight_dist_original"] == 0.0


def test_seeds_tier_adds_full_floor_rmia_challenge_and_intervals(run_pipeline, tmp_path):
    res = run_pipeline("metric=seeds", "metric.seeds=3", shared_cache=True)
    m = res["metrics"]
    for model in ("original", "gold", "unlearn"):
        assert all(f"{model}/{k}" in m for k in (*FULL, "rmia_auc", "rmia_tpr_at_1fpr"))
        assert 1 - math.log(2) <= m[f"{model}/zrf"] <= 1 and 0 <= m[f"{model}/ks_pvalue"] <= 1
    assert all(f"gold/{k}" in m for k in GOLD_RELATIVE)  # the gold-vs-gold noise floor
    assert m["unlearn/ain"] == m["unlearn/relearn_steps"] / m["gold/relearn_steps"]
    assert 0 <= m["unlearn/forget_score"] <= 1 and m["unlearn/forget_score_models"] == 3
    for k in ("forget_acc", "test_acc", "tow"):
        assert m[f"unlearn/{k}_ci95"] >= 0
    saved = torch.load(tmp_path / "run" / "logits.pt", weights_only=True)
    assert {"gold_seed1", "gold_seed2", "unlearn_seed1", "unlearn_seed2", "random_init"} <= set(saved["logits"])
    # the reference unlearned model is the first of its seeds: the mean is over it and the two others
    y = saved["labels"]["forget"]
    accs = [(saved["logits"][k]["forget"].argmax(1) == y).float().mean().item()
            for k in ("unlearn", "unlearn_seed1", "unlearn_seed2")]
    assert m["unlearn/forget_acc_mean"] == pytest.approx(sum(accs) / 3, abs=1e-6)


@pytest.mark.parametrize(("override", "option"), [
    ({"tier": "huge"}, "metric.tier='huge'"),
    ({"tier": "full", "seeds": 2}, "metric.seeds=2"),
    ({"tier": "full", "ain": {"alpha": 1.5}}, "metric.ain.alpha=1.5"),
    ({"tier": "seeds", "rmia": {"a": -0.1}}, "metric.rmia.a=-0.1"),
])
def test_bad_metric_config_names_the_option(override, option):
    cfg = OmegaConf.merge({"tier": "fast", "seeds": 4, "ain": {"alpha": 0.05}, "rmia": {"a": 0.3}}, override)
    with pytest.raises(ConfigError, match=option.replace(".", r"\.").replace("'", "'?")):
        check_config(cfg)


def test_a_sweep_evaluates_the_same_original_and_gold_once_per_process(run_pipeline, monkeypatch):
    """Jobs that differ only in the unlearner share M and M_g: their metrics are computed once, with the same
    numbers as computing them afresh; another forget set or metric config computes them again."""
    CACHE.clear()
    calls = []
    real = mia.svc_attack
    monkeypatch.setattr(mia, "svc_attack", lambda *a: calls.append(1) or real(*a))
    run = lambda *o: run_pipeline("callbacks.forget_retain=null", *o, shared_cache=True)  # noqa: E731

    first = run("unlearner=finetune")
    assert len(calls) == 3  # original, gold, unlearned
    second = run("unlearner=gradient_ascent")
    assert len(calls) == 4  # only the new unlearned model
    shared = [k for k in second["metrics"] if k.startswith(("original/", "gold/")) and "seconds" not in k]
    assert len(shared) > 20 and all(second["metrics"][k] == first["metrics"][k] for k in shared)

    CACHE.clear()
    afresh = run("unlearner=gradient_ascent")
    assert len(calls) == 7
    assert {k: v for k, v in afresh["metrics"].items() if "seconds" not in k and "speedup" not in k} == {
        k: v for k, v in second["metrics"].items() if "seconds" not in k and "speedup" not in k}

    run("unlearner=gradient_ascent", "forget.seed=1")  # another D_f: another gold, other splits for M
    assert len(calls) == 10
    run("unlearner=gradient_ascent", "metric.mia_seed=1")
    assert len(calls) == 13
