"""Loggers: what each one writes is read back from its own files (W&B's offline .wandb log, TensorBoard events)."""

from __future__ import annotations

import csv
import json
import struct
import time
import zlib
from pathlib import Path

import pytest
import torch

from mu_lightning.tracking import extras, loggers, naming

RESULTS = {
    "metrics": {f"{m}/{k}": v for m, base in (("original", 0.99), ("gold", 0.90), ("unlearn", 0.80))
                for k, v in (("forget_acc", base), ("retain_acc", base + 0.005), ("test_acc", base - 0.01))},
    "seconds": {"original": 2.0, "gold": 1.5, "unlearn": 0.2},
    "sizes": {"forget": 3, "retain": 5, "test": 4},
    "config": {"seed": 0, "unlearner": {"_target_": "mu_lightning.unlearners.Finetune", "epochs": 5}},
    "stages": {"unlearn": {"steps": 7}},
}
RUN = naming.StageRun("unlearn", "finetune-s0", {"seed": 0, "choices": {"unlearner": "finetune"}},
                       ("dataset:digits", "unlearner:finetune"))


def stage(name: str) -> naming.StageRun:
    return naming.StageRun(name, f"{name}-run", {"seed": 0})


def wandb_records(save_dir: Path, timeout: float = 30.0) -> list:
    """Every record of the one offline run under ``save_dir``."""
    (records,) = wandb_runs(save_dir, timeout).values()
    return records


def wandb_runs(save_dir: Path, timeout: float = 30.0) -> dict[str, list]:
    """``{job_type: records}`` of the offline runs under ``save_dir``, parsed with wandb's own protobuf schema.

    ``finish()`` can return before wandb-core has flushed the file (seen here: 0 records read right after it, all
    20 three seconds later), so each file is re-read until the exit record, which is written last, is there.
    """
    runs = {}
    for path in save_dir.glob("wandb/offline-run-*/run-*.wandb"):
        deadline = time.monotonic() + timeout
        records = _parse_wandb_log(path.read_bytes(), path)
        while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
            time.sleep(0.2)
            records = _parse_wandb_log(path.read_bytes(), path)
        (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        runs[start.job_type] = records
    return runs


def _parse_wandb_log(data: bytes, path: Path) -> list:
    """The .wandb file is a LevelDB-style log: a 7-byte header (``:W&B``, 0xBEE1, version), then 32 KiB blocks of
    records (CRC-32 of type + payload, uint16 length, type: full, first, middle, last); a block tail shorter than a
    record header is padding. The CRC is checked, so a misread fails loudly instead of yielding garbage; a record
    still being written at the end is left for the next read."""
    from wandb.proto import wandb_internal_pb2

    pos, parts, records = 7, b"", []
    assert data[:4] == b":W&B", path
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 or pos + 7 + length > len(data):
            break
        payload = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) == crc, f"bad CRC at byte {pos} of {path}"
        pos += 7 + length
        parts = payload if kind in (1, 2) else parts + payload
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(parts))
    return records


def _keys(records, kind: str) -> set[str]:
    items = {"history": lambda r: r.history.item, "summary": lambda r: r.summary.update,
             "config": lambda r: r.config.update}[kind]
    return {i.key or "/".join(i.nested_key) for r in records if r.WhichOneof("record_type") == kind
            for i in items(r)}


def _exit_code(records) -> int:
    (code,) = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
    return code


def _logits_file(run_dir: Path) -> None:
    g = torch.Generator().manual_seed(0)
    labels = {s: torch.randint(0, 3, (n,), generator=g) for s, n in RESULTS["sizes"].items()}
    logits = {m: {s: torch.randn(len(y), 3, generator=g) for s, y in labels.items()} for m in extras.MODELS}
    torch.save({"logits": logits, "labels": labels, "ids": {s: torch.arange(len(y)) for s, y in labels.items()}},
               run_dir / "logits.pt")


def test_offline_wandb_run_holds_metrics_config_table_and_histograms(tmp_path):
    _logits_file(tmp_path)
    run = loggers.wandb_logger(RUN, save_dir=str(tmp_path), project="test", mode="offline")
    loggers.log_final([run], {**RESULTS["metrics"], "seconds/unlearn": 0.2}, step=7)
    extras.log_results([run], RESULTS, tmp_path)
    loggers.close([run], ok=True)

    records = wandb_records(tmp_path)
    (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (start.job_type, start.display_name) == ("unlearn", "finetune-s0")
    assert list(start.tags) == ["dataset:digits", "unlearner:finetune"]
    assert start.run_group == "/".join(tmp_path.parts[-2:])
    assert {i.key for i in start.config.update} - {"_wandb"} == {"seed", "choices"}  # the stage's own, no more
    history, summary = _keys(records, "history"), _keys(records, "summary")
    assert not {*RESULTS["metrics"], "seconds/unlearn"} & history  # end-of-run numbers: summary only
    assert {*RESULTS["metrics"], "seconds/unlearn", "sizes/forget", "seconds/gold"} <= summary
    assert {f"loss/{m}/{s}/_type" for m in extras.MODELS for s in RESULTS["sizes"]} <= history
    assert {"final_metrics/_type", "forget_vs_retain_table/_type"} <= history
    assert _exit_code(records) == 0
    table = next(tmp_path.glob("wandb/offline-run-*/files/media/table/final_metrics_*.table.json"))
    assert '"forget_acc"' in table.read_text() and '"gold"' in table.read_text()


def test_failed_stage_marks_the_wandb_run_failed(tmp_path):
    run = loggers.wandb_logger(stage("gold"), save_dir=str(tmp_path), project="test", mode="offline")
    run.log_metrics({"train_loss": 1.0})
    loggers.close([run], ok=False)
    assert _exit_code(wandb_records(tmp_path)) == 1


def test_api_key_without_network_falls_back_to_offline_quickly(tmp_path, monkeypatch):
    """This machine has no network: an online init with a key set must give up after init_timeout, not ~100 s."""
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    t0 = time.perf_counter()
    run = loggers.wandb_logger(stage("unlearn"), save_dir=str(tmp_path), project="test", mode="online",
                               init_timeout=2)
    run.log_metrics({"trajectory/forget_acc": 0.5})
    loggers.close([run], ok=True)
    assert time.perf_counter() - t0 < 45  # init_timeout plus start-up on a loaded 2-core machine
    assert run.experiment.settings.mode == "offline"
    assert "trajectory/forget_acc" in _keys(wandb_records(tmp_path), "history")


def tensorboard_values(event_dir: Path) -> list:
    """Every summary value in the TensorBoard event files of ``event_dir`` (TFRecord framing: uint64 length, masked
    CRC, payload, masked CRC; the payload a tensorboardX ``Event``)."""
    from tensorboardX.proto.event_pb2 import Event

    values = []
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            values += Event.FromString(data[pos + 12:pos + 12 + length]).summary.value
            pos += 16 + length
    return values


def test_csv_tensorboard_and_wandb_hold_the_same_keys(run_pipeline, tmp_path):
    results = run_pipeline("logger=[csv,tensorboard,wandb]", "train.epochs=2", "unlearner.epochs=1")
    runs = wandb_runs(tmp_path / "run")
    assert set(runs) == {"original", "gold", "unlearn"}
    for stage in ("original", "gold", "unlearn"):
        with (tmp_path / "run" / "csv" / stage / "metrics.csv").open() as f:
            csv_keys = set(next(csv.reader(f))) - {"step"}
        tb_keys = {v.tag for v in tensorboard_values(tmp_path / "run" / "tensorboard" / stage)
                   if v.WhichOneof("value") == "simple_value"}
        text_only = {k for k in csv_keys if "/" in k and not k.startswith("trajectory/")} - set(loggers.HEADLINE)
        assert "train_loss" in csv_keys and csv_keys - text_only == tb_keys, stage  # final numbers: text, HParams
        assert csv_keys - {"epoch"} <= _keys(runs[stage], "history") | _keys(runs[stage], "summary"), stage
        assert _exit_code(runs[stage]) == 0
    logged = {k for k, v in results["metrics"].items() if v is not None}  # a null (unknown, uninformative) is not
    (table,) = [v.tensor.string_val[0].decode() for v in tensorboard_values(tmp_path / "run" / "tensorboard" /
                                                                           "unlearn") if v.tag.startswith("final")]
    assert logged & set(loggers.HEADLINE) <= tb_keys and all(f"| {k} |" in table for k in logged)
    assert logged <= _keys(runs["unlearn"], "summary") - _keys(runs["unlearn"], "history")
    (start,) = [r.run for r in runs["unlearn"] if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in start.config.update}
    assert config["choices"]["unlearner"] == "finetune" and config["train"]["epochs"] == 2
    assert "${" not in json.dumps(config)  # resolved: plain values only


def test_tensorboard_gets_loss_histograms(tmp_path):
    _logits_file(tmp_path)
    tb = loggers.tensorboard_logger(stage("unlearn"), save_dir=str(tmp_path))
    extras.log_results([tb], RESULTS, tmp_path)
    loggers.close([tb], ok=True)
    tags = {v.tag for v in tensorboard_values(tmp_path / "tensorboard" / "unlearn") if v.histo.num}
    assert tags == {f"loss/{m}/{s}" for m in extras.MODELS for s in RESULTS["sizes"]}


def test_failing_extras_warn_instead_of_failing_the_run(tmp_path, caplog):
    (tmp_path / "logits.pt").write_bytes(b"not a torch file")
    tb = loggers.tensorboard_logger(stage("unlearn"), save_dir=str(tmp_path))
    extras.log_results([tb], RESULTS, tmp_path)
    loggers.close([tb], ok=True)
    assert "end-of-run logger extras failed" in caplog.text


def test_sample_losses_are_per_sample_cross_entropy(tmp_path):
    _logits_file(tmp_path)
    saved = torch.load(tmp_path / "logits.pt", weights_only=True)
    losses = extras.sample_losses(tmp_path / "logits.pt")
    x, y = saved["logits"]["gold"]["test"], saved["labels"]["test"]
    expected = -torch.log_softmax(x, 1)[torch.arange(len(y)), y]
    assert torch.allclose(losses[("gold", "test")], expected)
    assert extras.sample_losses(tmp_path / "missing.pt") == {}


@pytest.mark.parametrize("metrics,expected", [
    ({"gold/forget_acc": 0.9, "unlearn/forget_acc": 0.8, "unlearn/avg_gap": 0.1, "seconds/total": 3.0},
     (["model", "avg_gap", "forget_acc"], [["gold", None, 0.9], ["unlearn", 0.1, 0.8]])),
    ({}, (["model"], [])),
])
def test_metrics_table_rows_per_model(metrics, expected):
    assert extras.metrics_table(metrics) == expected


def test_checkpoint_artifact_holds_the_three_models(run_pipeline, tmp_path):
    results = run_pipeline("logger=wandb", "logger.wandb.log_checkpoints=true", "train.epochs=2", "unlearner.epochs=1")
    unlearned = torch.load(tmp_path / "run" / "unlearned.pt", weights_only=True)
    assert results["config"]["save_unlearned"] is True and unlearned  # implied by log_checkpoints
    artifact = extras.checkpoint_artifact(results)
    assert artifact.type == "model" and set(artifact.manifest.entries) == {"original.pt", "gold.pt", "unlearn.pt"}
    records = wandb_runs(tmp_path / "run")["unlearn"]
    assert any(r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model" for r in records)


def test_wandb_with_the_full_tier_on_a_fresh_cache_keeps_each_stage_in_its_own_run(run_pipeline, tmp_path):
    """Issue 24: the full tier's extra gold seeds, trained while the unlearn stage's W&B run was open, finished that
    run (W&B "run is finished" after all the training, no results.json) and logged their curves into it."""
    results = run_pipeline("logger=wandb", "metric=full", "metric.seeds=3", "train.epochs=2", "unlearner.epochs=1")
    assert results["metrics"]["unlearn/ks_pvalue"] is not None
    wandb_runs(tmp_path / "run")  # waits until every run's file is flushed
    runs = []
    for path in (tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb"):
        records = _parse_wandb_log(path.read_bytes(), path)
        (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        runs.append((start.job_type, records))
    kinds = sorted(kind for kind, _ in runs)
    assert kinds == ["gold", "gold", "gold", "original", "unlearn"], kinds  # each gold seed a run of its own
    assert all(_exit_code(records) == 0 for _, records in runs)
    (unlearn,) = [records for kind, records in runs if kind == "unlearn"]
    assert {k for k, v in results["metrics"].items() if v is not None} <= _keys(unlearn, "summary")
    logged = [r for r in unlearn if r.WhichOneof("record_type") == "history"
              and "train_loss" in {i.key or "/".join(i.nested_key) for i in r.history.item}]
    assert len(logged) == 1, len(logged)  # unlearner.epochs=1: its own loss only, no gold seed's 2 epochs


def test_common_wandb_options_reach_wandb_init(tmp_path):
    run = loggers.wandb_logger(stage("unlearn"), save_dir=str(tmp_path), project="test", mode="offline",
                               entity="my-team", notes="first try", tags=["mine"], config={"note": 1})
    loggers.close([run], ok=True)
    (start,) = [r.run for r in wandb_records(tmp_path) if r.WhichOneof("record_type") == "run"]
    assert start.entity == "my-team" and start.notes == "first try" and "mine" in start.tags
    assert "note" in {i.key for i in start.config.update}
