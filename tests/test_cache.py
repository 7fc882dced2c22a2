"""The stage cache: hit, miss, invalidation by determining fields only, atomic and verified entries."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mu_lightning.cache import StageCache, cache_key
from mu_lightning.errors import ConfigError

NAN = math.nan


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
    from mu_lightning.runtime.checks import check_data
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


def test_a_cache_poisoned_by_a_trainer_setting_is_not_served(run_pipeline):
    """Attack replayed: a run with ``+trainer.max_steps=3`` stores under-trained models; a plain run must not load
    them. Settings that only change what is shown share the entry."""
    poisoned = run_pipeline("unlearner=none", "+trainer.max_steps=3", out="poisoned")
    plain = run_pipeline("unlearner=none", out="plain")
    for stage in ("original", "gold"):
        assert not plain["stages"][stage]["cache_hit"]
        assert plain["stages"][stage]["cache_key"] != poisoned["stages"][stage]["cache_key"]
    assert plain["stages"]["original"]["steps"] > poisoned["stages"]["original"]["steps"]  # it was under-trained
    shown = run_pipeline("unlearner=none", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=7",
                         out="shown")
    assert shown["stages"]["original"]["cache_hit"] and shown["stages"]["gold"]["cache_hit"]


def test_a_swapped_entry_is_rebuilt_not_loaded(tmp_path, caplog):
    """Attack replayed: a gold entry copied over the original's file names matches its own size and hash, but its
    record names another stage and key."""
    cache, calls = StageCache(tmp_path), []
    cache.get_or_train("original", "k1", trainer(calls, value=1.0))
    cache.get_or_train("gold", "k2", trainer(calls, value=2.0))
    for gold, original in zip(cache.paths("gold", "k2"), cache.paths("original", "k1"), strict=True):
        original.write_bytes(gold.read_bytes())
    state, _, hit = cache.get_or_train("original", "k1", trainer(calls, value=1.0))
    assert not hit and calls == [1, 1, 1] and torch.equal(state["w"], torch.full((3,), 1.0))
    assert "belongs to gold-k2, not original-k1" in caplog.text


class _Payload:
    """Unpickling it would create ``path``: what a malicious weights file does."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _rewrite_weights(cache, obj):
    """Replace entry original-k's weights by ``obj`` and re-record their size and hash, so only ``obj`` is wrong."""
    from mu_lightning.files import file_digest

    weights, record = cache.paths("original", "k")
    torch.save(obj, weights)
    info = json.loads(record.read_text())
    info.update(size=weights.stat().st_size, sha256=file_digest(weights))
    record.write_text(json.dumps(info))


@pytest.mark.parametrize("damage", ["record_a_list", "record_lacks_sha256", "record_old_format", "not_a_state_dict",
                                    "wrong_shape", "extra_tensor", "nan_weights", "pickle_payload"])
def test_any_damaged_record_or_weights_file_is_rebuilt(tmp_path, caplog, damage):
    cache, calls = StageCache(tmp_path, shapes={"w": (3,)}), []
    cache.get_or_train("original", "k", trainer(calls))
    weights, record = cache.paths("original", "k")
    info = json.loads(record.read_text())
    if damage == "record_a_list":
        record.write_text("[1, 2]")
    elif damage == "record_lacks_sha256":
        record.write_text(json.dumps({k: v for k, v in info.items() if k != "sha256"}))
    elif damage == "record_old_format":
        record.write_text(json.dumps({**info, "format": 1}))
    else:
        _rewrite_weights(cache, {
            "not_a_state_dict": [1, 2, 3], "wrong_shape": {"w": torch.ones(4)},
            "extra_tensor": {"w": torch.ones(3), "b": torch.ones(1)},
            "nan_weights": {"w": torch.tensor([1.0, NAN, 1.0])},
            "pickle_payload": {"w": _Payload(tmp_path / "marker")}}[damage])
    state, meta, hit = cache.get_or_train("original", "k", trainer(calls, value=3.0))
    assert not hit and calls == [1, 1] and torch.equal(state["w"], torch.full((3,), 3.0))
    assert "damaged" in caplog.text and not (tmp_path / "marker").exists()
    assert json.loads(record.read_text())["stage"] == "original"  # the rebuilt entry is sound ...
    assert cache.load("original", "k") is not None  # ... and loads


def test_a_waiting_job_names_the_lock_holder(tmp_path, caplog, monkeypatch):
    """A job that finds the key locked says which process holds it (the lock's side file), and says it again
    while it waits."""
    import os
    import socket
    import threading

    import mu_lightning.cache as cache_module

    monkeypatch.setattr(cache_module, "WAIT_NOTE_S", 0.1)
    cache, release, results = StageCache(tmp_path), threading.Event(), []

    def slow_train():
        release.wait(10)
        return {"w": torch.ones(3)}, {}

    holder = threading.Thread(target=lambda: cache.get_or_train("gold", "k", slow_train))
    holder.start()
    side = tmp_path / "gold-k.lock.holder"
    for _ in range(200):
        if side.exists():
            break
        threading.Event().wait(0.01)
    waiter = threading.Thread(target=lambda: results.append(cache.get_or_train("gold", "k", trainer([]))))
    waiter.start()
    threading.Event().wait(0.5)
    release.set()
    holder.join(10)
    waiter.join(10)
    notes = [r.getMessage() for r in caplog.records if "is being produced by" in r.getMessage()]
    assert len(notes) >= 2 and f"pid {os.getpid()} on host {socket.gethostname()}" in notes[0]
    assert results and results[0][2]  # the waiter loaded what the holder stored


class ComputesInInit(torch.nn.Module):
    """A model of one's own whose ``__init__`` reads a value from its tensors: it cannot be built on the meta device."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.size = int(self.scale.sum().item())
        self.head = torch.nn.Linear(self.size, 2)


def test_the_caches_shapes_come_from_the_meta_device_or_the_cpu_when_a_model_needs_it():
    from omegaconf import OmegaConf

    from mu_lightning.models import MLP
    from mu_lightning.pipeline import _shapes

    mlp = {"_target_": "mu_lightning.models.MLP", "input_shape": [1, 8, 8], "num_classes": 10}
    state = torch.random.get_rng_state()
    shapes = _shapes(OmegaConf.create({"model": mlp}))
    assert torch.equal(state, torch.random.get_rng_state())  # built on meta: no weight drawn, the RNG untouched
    assert shapes == {k: tuple(v.shape) for k, v in MLP(input_shape=[1, 8, 8], num_classes=10).state_dict().items()}
    assert _shapes(OmegaConf.create({"model": {"_target_": "tests.test_cache.ComputesInInit"}})) == {
        "scale": (3,), "head.weight": (2, 3), "head.bias": (2,)}  # meta refused .item(): built on the CPU
