"""The stage cache: hit, miss, invalidation by determining fields only, atomic and verified entries."""

from __future__ import annotations

import json

import pytest
import torch

from mu_lightning.cache import StageCache, cache_key
from mu_lightning.errors import ConfigError


def trainer(calls, value=1.0):
    def train():
        calls.append(1)
        return {"w": torch.full((3,), value)}, {"fit_seconds": 0.5, "steps": 7}
    return train


def test_miss_then_hit(tmp_path):
    cache, calls = StageCache(tmp_path), []
    state, meta, hit = cache.get_or_train("gold", "k1", trainer(calls))
    assert not hit and calls == [1]
    state2, meta2, hit2 = cache.get_or_train("gold", "k1", trainer(calls, value=2.0))
    assert hit2 and calls == [1]  # not trained again
    assert torch.equal(state2["w"], state["w"]) and meta2 == {"fit_seconds": 0.5, "steps": 7}
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_disabled_cache_always_trains_and_writes_nothing(tmp_path):
    cache, calls = StageCache(tmp_path / "c", enabled=False), []
    cache.get_or_train("gold", "k", trainer(calls))
    cache.get_or_train("gold", "k", trainer(calls))
    assert calls == [1, 1] and not (tmp_path / "c").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_record", "no_weights"])
def test_damaged_entry_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    cache, calls = StageCache(tmp_path), []
    cache.get_or_train("original", "k", trainer(calls))
    weights, record = cache.paths("original", "k")
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-20])
    elif damage == "flip":
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "no_record":  # as after a kill between the two renames
        record.unlink()
    else:
        weights.unlink()
    state, _, hit = cache.get_or_train("original", "k", trainer(calls, value=3.0))
    assert not hit and calls == [1, 1] and torch.equal(state["w"], torch.full((3,), 3.0))
    if damage != "no_record":
        assert "damaged" in caplog.text
    assert json.loads(record.read_text())["size"] == weights.stat().st_size  # the rebuilt entry is valid


def test_key_depends_on_every_field_and_nothing_else():
    spec = {"stage": "gold", "data": "abc", "seed": 0, "model": {"hidden": [128]}, "train": {"lr": 0.1}}
    base = cache_key(spec)
    assert cache_key(dict(reversed(list(spec.items())))) == base  # order of keys is irrelevant
    for field, value in [("data", "abd"), ("seed", 1), ("model", {"hidden": [64]}), ("train", {"lr": 0.2})]:
        assert cache_key({**spec, field: value}) != base


def test_unwritable_cache_dir_is_a_clear_error(tmp_path):
    """Checked before training with the other inputs (checks.check_data); cache=false never writes there."""
    from mu_lightning.checks import check_data
    from tests.helpers import compose_cfg, make_data

    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = make_data(tmp_path)
    with pytest.raises(ConfigError, match=r"paths.cache_dir=.*not writable.*or run with cache=false"):
        check_data(compose_cfg(tmp_path, [f"paths.cache_dir={blocker / 'cache'}"], fast=False), data)
    check_data(compose_cfg(tmp_path, [f"paths.cache_dir={blocker / 'cache'}", "cache=false"], fast=False), data)


def test_pipeline_invalidates_only_on_determining_fields(run_pipeline):
    first = run_pipeline("unlearner=none", out="a")
    keys = {s: first["stages"][s]["cache_key"] for s in ("original", "gold")}
    irrelevant = run_pipeline("unlearner=finetune", "logger=csv", "unlearn_seed=3", out="b")
    assert irrelevant["stages"]["original"]["cache_hit"] and irrelevant["stages"]["gold"]["cache_hit"]
    new_request = run_pipeline("unlearner=none", "forget.seed=1", out="c")  # changes D_r, not D
    assert new_request["stages"]["original"]["cache_hit"] and not new_request["stages"]["gold"]["cache_hit"]
    assert new_request["stages"]["gold"]["cache_key"] != keys["gold"]
    new_recipe = run_pipeline("unlearner=none", "train.optimizer.lr=0.02", out="d")
    assert not new_recipe["stages"]["original"]["cache_hit"] and not new_recipe["stages"]["gold"]["cache_hit"]
    new_model = run_pipeline("unlearner=none", "model.hidden=[32]", out="e")
    assert not new_model["stages"]["original"]["cache_hit"]
