"""Sweep aggregation: rows, mean ± std, best marks, skipped jobs and plots, on hand-made and on real run dirs."""

from __future__ import annotations

import csv
import json
import os
import runpy
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from mu_lightning import report

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(path: Path, unlearner: str, seed: int, unlearn: dict, gold: dict, unlearn_s: float = 2.0,
             extra_cfg: dict | None = None) -> Path:
    """A completed run dir as the pipeline writes it (results.json) with Hydra's record of the group choices."""
    path.mkdir(parents=True)
    cfg = {"seed": seed, "unlearn_seed": seed, "dataset": {"name": "digits"}, "model": {"_target_": "x.MLP"},
           "forget": {"_target_": "x.random_sample", "fraction": 0.1, "seed": 0},
           "unlearner": {"_target_": f"x.{unlearner}", "lr": 0.1, **(extra_cfg or {})},
           "paths": {"output_dir": str(path)}}
    results = {"metrics": {**{f"unlearn/{k}": v for k, v in unlearn.items()},
                           **{f"gold/{k}": v for k, v in gold.items()}, "original/forget_acc": 1.0},
               "seconds": {"original": 9.0, "gold": 0.01, "unlearn": unlearn_s},
               "stages": {"gold": {"cache_key": f"gold-seed{seed}", "fit_seconds": 8.0}, "unlearn": {"method": "X"}},
               "config": cfg}
    (path / "results.json").write_text(json.dumps(results))
    (path / ".hydra").mkdir()
    (path / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  runtime:\n    choices:\n      unlearner: {unlearner}\n      forget: random\n      model: mlp\n")
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Two unlearners × two seeds; gold models shared per seed; one failed job."""
    gold = [{"forget_acc": 0.90, "retain_acc": 0.99}, {"forget_acc": 0.92, "retain_acc": 0.97}]
    fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.95, "retain_acc": 0.98, "avg_gap": 0.03, "zeta": 1.0},
             gold[0], unlearn_s=2.0)
    fake_run(tmp_path / "1", "finetune", 1, {"forget_acc": 0.97, "retain_acc": 0.96, "avg_gap": 0.05, "zeta": 3.0},
             gold[1], unlearn_s=4.0)
    fake_run(tmp_path / "2", "ascent", 0, {"forget_acc": 0.91, "retain_acc": 0.90, "avg_gap": 0.05}, gold[0],
             unlearn_s=0.5)
    fake_run(tmp_path / "3", "ascent", 1, {"forget_acc": 0.91, "retain_acc": 0.92, "avg_gap": 0.03}, gold[1],
             unlearn_s=0.5)
    (tmp_path / "4" / ".hydra").mkdir(parents=True)  # a job that crashed before results.json
    return tmp_path


def test_rows_gold_first_mean_std_over_seeds(sweep):
    runs, notes = report.find_runs([sweep])
    summary = report.summarize(runs, notes)
    assert [r.labels["unlearner"] for r in summary.rows] == ["gold", "ascent", "finetune"]
    assert summary.columns == ["forget_acc", "retain_acc", "avg_gap", "train_seconds", "speedup", "zeta"]
    gold, ascent, finetune = summary.rows
    assert gold.n == 2  # four jobs, but only two distinct gold models (one per seed)
    assert gold.mean("forget_acc") == pytest.approx(0.91) and gold.std("forget_acc") == pytest.approx(
        statistics.stdev([0.90, 0.92]))
    assert gold.mean("train_seconds") == pytest.approx(8.0)  # retraining time from the cache record, not the load time
    assert finetune.mean("avg_gap") == pytest.approx(0.04) and finetune.mean("zeta") == pytest.approx(2.0)
    assert finetune.mean("speedup") == pytest.approx((8 / 2 + 8 / 4) / 2)
    assert ascent.mean("zeta") is None
    assert notes == [f"{sweep / '4'}: no results.json (failed or unfinished job), skipped"]


def test_best_is_closest_to_gold_lowest_gap_fastest(sweep):
    summary = report.summarize(report.find_runs([sweep])[0])
    marks = report.best(summary)
    assert marks["forget_acc"] == {1}  # ascent 0.91 equals gold's 0.91; finetune 0.96 is further
    assert marks["retain_acc"] == {2}  # gold 0.98: finetune 0.97 beats ascent 0.91
    assert marks["avg_gap"] == {1, 2}  # a tie at 0.04 marks both
    assert marks["speedup"] == {1} and marks["train_seconds"] == {1}
    assert "zeta" not in marks  # one row only: nothing to compare


def test_write_files_notes_and_pngs(sweep, tmp_path):
    out = tmp_path / "report"
    report.write([sweep], out)
    md = (out / "summary.md").read_text()
    assert "| forget | unlearner | n | forget_acc | retain_acc | avg_gap | train_seconds | speedup |" in md
    assert "| forget | unlearner | n | zeta |" in md and "**0.9100 ± 0.0000**" in md  # other metrics: own table
    assert "4: no results.json (failed or unfinished job), skipped" in md
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["unlearner"] for r in rows] == ["gold", "ascent", "finetune"]
    assert float(rows[2]["avg_gap_mean"]) == pytest.approx(0.04) and rows[1]["best"].startswith("forget_acc;")
    for name in ("forget_vs_acc.png", "avg_gap.png", "time.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1000


def test_missing_avg_gap_skips_its_plot_with_a_note(tmp_path):
    fake_run(tmp_path / "runs" / "0", "finetune", 0, {"forget_acc": 0.9, "test_acc": 0.8}, {"forget_acc": 0.8})
    summary = report.write([tmp_path / "runs"], tmp_path / "out")
    assert not (tmp_path / "out" / "avg_gap.png").exists() and (tmp_path / "out" / "forget_vs_acc.png").exists()
    assert "avg_gap.png skipped: no avg_gap in the results" in summary.notes
    assert "avg_gap.png skipped" in (tmp_path / "out" / "summary.md").read_text()


def test_same_method_with_different_hyperparameters_gets_separate_rows(tmp_path):
    fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.9}, {"forget_acc": 0.8}, extra_cfg={"lr": 0.1})
    fake_run(tmp_path / "1", "finetune", 1, {"forget_acc": 0.7}, {"forget_acc": 0.8}, extra_cfg={"lr": 0.1})
    fake_run(tmp_path / "2", "finetune", 0, {"forget_acc": 0.5}, {"forget_acc": 0.8}, extra_cfg={"lr": 0.01})
    summary = report.summarize(report.find_runs([tmp_path])[0])
    rows = {r.labels["unlearner"]: r for r in summary.rows}
    assert set(rows) == {"gold", "finetune[unlearner.lr=0.1]", "finetune[unlearner.lr=0.01]"}
    assert rows["finetune[unlearner.lr=0.1]"].n == 2 and rows["finetune[unlearner.lr=0.01]"].n == 1


def test_cli_over_several_paths(sweep, tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "report.py"))["main"]
    with pytest.raises(SystemExit) as bad:
        main([str(sweep / "0"), str(sweep / "1")])
    assert bad.value.code == 2 and "--out is required" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no completed runs"):
        main([str(tmp_path / "nothing-here")])
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), str(sweep / "0"), str(sweep / "2"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, check=True)
    assert "| random(fraction=0.1) | finetune | 1 |" in done.stdout


@pytest.mark.slow
def test_real_sweep_is_aggregated_by_the_hydra_callback(tmp_path):
    """A real 2 × 2 sweep as a subprocess: the callback writes the summary; a job made to look failed is skipped."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "dataset=synthetic", "dataset.source.num_samples=600",
           "train.epochs=3", "unlearner=none,finetune", "seed=0,1", f"hydra.sweep.dir={sweep}",
           f"paths.cache_dir={tmp_path / 'cache'}"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, timeout=600,
                   env={**os.environ, "WANDB_MODE": "offline"})
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["unlearner"], r["n"]) for r in rows] == [("gold", "2"), ("finetune", "2"), ("none", "2")]
    assert all(r["dataset"] == "synthetic" and r["forget"] == "random(fraction=0.1)" for r in rows)
    for name in ("forget_vs_acc.png", "time.png"):
        data = (sweep / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1000

    (sweep / "3" / "results.json").unlink()  # job 3 is finetune, seed 1
    summary = report.write([sweep], tmp_path / "again")
    assert [(r.labels["unlearner"], r.n) for r in summary.rows] == [("gold", 2), ("finetune", 1), ("none", 2)]
    assert any(n.startswith(f"{sweep / '3'}: no results.json") for n in summary.notes)


def test_metrics_own_speedup_and_train_seconds_win_over_derived_ones(tmp_path):
    fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.9, "speedup": 7.0, "train_seconds": 1.5},
             {"forget_acc": 0.8}, unlearn_s=2.0)
    (_, row) = report.summarize(report.find_runs([tmp_path])[0]).rows
    assert (row.mean("speedup"), row.mean("train_seconds")) == (7.0, 1.5)


def test_callback_logs_a_failure_instead_of_failing_the_sweep(tmp_path, caplog):
    from omegaconf import OmegaConf

    from mu_lightning.callbacks.aggregate import AggregateSweep

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    AggregateSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(blocker)}}}))
    assert f"aggregating {blocker} failed" in caplog.text
