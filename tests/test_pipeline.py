"""End to end, in process: the pipeline on synthetic data writes a complete, reproducible results.json."""

from __future__ import annotations

import pytest


def test_end_to_end_writes_results(run_pipeline, tmp_path):
    res = run_pipeline("unlearner=finetune")
    m = res["metrics"]
    for model in ("original", "gold", "unlearn"):
        for split in ("forget", "retain", "val", "test"):
            assert 0.0 <= m[f"{model}/{split}_acc"] <= 1.0
    # the synthetic task is learnable: far above the 10% of chance
    assert m["original/retain_acc"] > 0.8 and m["original/test_acc"] > 0.6
    assert res["stages"]["original"]["cache_hit"] is False and res["stages"]["gold"]["cache_hit"] is False
    assert set(res["seconds"]) >= {"original", "gold", "unlearn", "evaluate", "total"}
    assert res["versions"]["torch"] and res["config"]["unlearner"]["_target_"].endswith("Finetune")
    ids = [int(s) for s in (tmp_path / "run" / "forget_ids.txt").read_text().split()]
    assert len(ids) == res["sizes"]["forget"] == round(0.1 * res["sizes"]["train"])


def numbers(results: dict) -> dict:
    """Every metric except wall-clock ones (seconds, speed-up), which no seed can fix."""
    return {k: v for k, v in results["metrics"].items() if "seconds" not in k and "speedup" not in k}


def test_same_seed_same_numbers_whether_cached_or_trained(run_pipeline):
    first = run_pipeline("unlearner=gradient_ascent", out="a")
    again = run_pipeline("unlearner=gradient_ascent", out="b")  # original and gold now come from the cache
    assert again["stages"]["original"]["cache_hit"] and again["stages"]["gold"]["cache_hit"]
    assert numbers(first) == numbers(again) and len(numbers(first)) > 20
    fresh = run_pipeline("unlearner=gradient_ascent", "cache=false", out="c")
    assert fresh["stages"]["original"]["cache_hit"] is False
    assert numbers(fresh) == numbers(first)


def test_none_unlearner_returns_the_original(run_pipeline):
    m = run_pipeline("unlearner=none")["metrics"]
    for split in ("forget", "retain", "test"):
        assert m[f"unlearn/{split}_acc"] == m[f"original/{split}_acc"]


def test_class_forgetting_gold_never_predicts_the_class(run_pipeline):
    res = run_pipeline("forget=class", "forget.classes=[3]", "unlearner=none")
    assert res["metrics"]["gold/forget_acc"] == pytest.approx(0.0, abs=0.02)
    assert res["metrics"]["original/forget_acc"] > 0.8


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet18"])
def test_every_model_trains(run_pipeline, model):
    overrides = [f"model={model}", "unlearner=none"]
    if model == "resnet18":  # ~11M parameters: one short epoch is enough to show it runs
        overrides += ["model.width=8", "train.epochs=1"]
    res = run_pipeline(*overrides)
    assert res["stages"]["original"]["steps"] > 0
    assert res["metrics"]["original/retain_acc"] > 0.1


def test_steps_per_lightning_batch_change_no_number(run_pipeline, monkeypatch):
    """Chunking optimizer steps into Lightning batches only saves loop overhead: same steps, batches and order."""
    from mu_lightning.stages import Stage

    monkeypatch.setattr(Stage, "steps_per_batch", 1)
    chunked = ["unlearner=neggrad_plus", "cache=false", "callbacks.forget_retain=null"]  # no step-cadence callback
    one = run_pipeline(*chunked, out="one")
    monkeypatch.setattr(Stage, "steps_per_batch", 5)
    five = run_pipeline(*chunked, out="five")
    assert one["stages"]["unlearn"]["steps"] == five["stages"]["unlearn"]["steps"] > 5
    assert numbers(one) == numbers(five)
