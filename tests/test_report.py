"""Sweep aggregation: rows, mean ± 95 % t-interval, duplicates, best and tied marks, searches, skipped jobs, and the
figures (checked through their matplotlib objects: panels, colours, reference lines, error-bar extents)."""

from __future__ import annotations

import csv
import json
import math
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer

from mu_lightning.tracking import report
from mu_lightning.tracking.report import plots as report_plots

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
T1 = math.tan(math.pi * 0.475)  # t_{0.975, 1}: with one degree of freedom Student's t is the Cauchy distribution


def fake_run(path: Path, unlearner: str, seed: int, unlearn: dict, gold: dict, unlearn_s: float = 2.0,
             extra_cfg: dict | None = None, forget: str = "random", top: dict | None = None) -> Path:
    """A completed run dir as the pipeline writes it (results.json) with Hydra's record of the group choices."""
    path.mkdir(parents=True)
    request = ({"_target_": "x.random_sample", "fraction": 0.1, "seed": 0} if forget == "random"
               else {"_target_": "x.by_class", "classes": [3]})
    cfg = {"seed": seed, "unlearn_seed": seed, "dataset": {"name": "digits"}, "model": {"_target_": "x.MLP"},
           "forget": request, "unlearner": {"_target_": f"x.{unlearner}", "lr": 0.1, **(extra_cfg or {})},
           "paths": {"output_dir": str(path)}, **(top or {})}
    results = {"metrics": {**{f"unlearn/{k}": v for k, v in unlearn.items()},
                           **{f"gold/{k}": v for k, v in gold.items()}, "original/forget_acc": 1.0},
               "seconds": {"original": 9.0, "gold": 0.01, "unlearn": unlearn_s},
               "stages": {"gold": {"cache_key": f"gold-{forget}-seed{seed}", "fit_seconds": 8.0},
                          "unlearn": {"method": "X"}},
               "tuning": cfg.get("tuning"), "config": cfg}
    (path / "results.json").write_text(json.dumps(results))
    (path / ".hydra").mkdir()
    (path / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  runtime:\n    choices:\n      unlearner: {unlearner}\n      forget: {forget}\n      model: mlp\n")
    return path


def fake_trajectory(run: Path, prefix: str, points: dict[int, float]) -> None:
    """csv/unlearn/metrics.csv as the CSV logger writes it: trajectory rows, then the final evaluation's row."""
    (run / "csv" / "unlearn").mkdir(parents=True)
    keys = [f"{prefix}/{m}" for m in ("forget_acc", "retain_acc", "mia_loss_auc")]
    with (run / "csv" / "unlearn" / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["epoch", "step", "train_loss", *keys, "unlearn/test_acc"])
        w.writeheader()
        for step, v in points.items():
            w.writerow({"step": step, **{k: v for k in keys}})
            w.writerow({"epoch": 0, "step": step, "train_loss": 1.0})
        w.writerow({"step": max(points), "unlearn/test_acc": 0.5})  # the final evaluation: one point, no trajectory


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Two unlearners × two seeds; gold models shared per seed; one failed job."""
    gold = [{"forget_acc": 0.90, "retain_acc": 0.99}, {"forget_acc": 0.92, "retain_acc": 0.97}]
    fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.95, "retain_acc": 0.98, "avg_gap": 0.03, "zeta": 1.0},
             gold[0], unlearn_s=2.0)
    fake_run(tmp_path / "1", "finetune", 1, {"forget_acc": 0.97, "retain_acc": 0.98, "avg_gap": 0.05, "zeta": 3.0},
             gold[1], unlearn_s=4.0)
    fake_run(tmp_path / "2", "gradient_ascent", 0, {"forget_acc": 0.91, "retain_acc": 0.90, "avg_gap": 0.05},
             gold[0], unlearn_s=0.5)
    fake_run(tmp_path / "3", "gradient_ascent", 1, {"forget_acc": 0.91, "retain_acc": 0.90, "avg_gap": 0.03},
             gold[1], unlearn_s=0.5)
    (tmp_path / "4" / ".hydra").mkdir(parents=True)  # a job that crashed before results.json
    return tmp_path


def summary_of(*paths: Path) -> report.Summary:
    return report.aggregate(*report.find_runs(list(paths)))


def test_rows_gold_first_mean_and_t_interval_over_seeds(sweep):
    summary = summary_of(sweep)
    assert [r.labels["unlearner"] for r in summary.rows] == ["gold", "finetune", "gradient_ascent"]  # catalogue order
    assert summary.columns == ["forget_acc", "retain_acc", "avg_gap", "speedup", "train_seconds", "zeta"]
    gold, finetune, ascent = summary.rows
    assert gold.n == 2  # four jobs, but only two distinct gold models (one per seed)
    assert gold.mean("forget_acc") == pytest.approx(0.91)
    assert gold.half("forget_acc") == pytest.approx(T1 * 0.01)  # s = 0.01·√2, divided by √2
    assert gold.mean("train_seconds") == pytest.approx(8.0)  # retraining time from the cache record, not the load time
    assert finetune.mean("avg_gap") == pytest.approx(0.04) and finetune.mean("zeta") == pytest.approx(2.0)
    assert finetune.mean("speedup") == pytest.approx((8 / 2 + 8 / 4) / 2)
    assert ascent.mean("zeta") is None and ascent.half("retain_acc") == 0.0
    assert summary.notes == [f"{sweep / '4'}: no results.json (failed or unfinished job), skipped"]


def test_a_duplicated_run_directory_counts_once(sweep, tmp_path):
    shutil.copytree(sweep / "0", sweep / "0-copy")  # copied: same config and seeds
    summary = summary_of(sweep, sweep / "1")  # sweep/1 found twice
    gold, finetune, ascent = summary.rows
    assert (gold.n, finetune.n, ascent.n) == (2, 2, 2)
    assert finetune.values["forget_acc"] == [0.95, 0.97] and finetune.half("forget_acc") == pytest.approx(T1 * 0.01)
    assert f"{sweep / '0-copy'}: same config and seeds as {sweep / '0'} (a copy or a re-run), counted once" \
        in summary.notes


def test_best_needs_separation_by_the_intervals_else_ties(sweep):
    marks = report.marks(summary_of(sweep))
    # gold forget 0.91: ascent 0.91 (±0) is closest, but finetune's 0.96 ± 12.7·0.01 reaches it: a tie
    assert marks["forget_acc"] == {1: "tie", 2: "tie"}
    assert marks["retain_acc"] == {1: "best"}  # gold 0.98: finetune 0.98 ± 0 against ascent 0.90 ± 0
    assert marks["avg_gap"] == {1: "tie", 2: "tie"}  # 0.04 both
    assert marks["speedup"] == {2: "best"}  # 16 ± 0 against 3 ± 12.7: 13 apart
    assert marks["train_seconds"] == {1: "tie", 2: "tie"}  # 0.5 ± 0 against 3 ± 12.7
    assert "zeta" not in marks  # one row only: nothing to compare


def test_one_seed_shows_no_spread_and_marks_no_best(tmp_path):
    fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.9, "avg_gap": 1.0}, {"forget_acc": 0.8})
    fake_run(tmp_path / "1", "gradient_ascent", 0, {"forget_acc": 0.7, "avg_gap": 2.0}, {"forget_acc": 0.8})
    summary = report.summarise([tmp_path], tmp_path / "out")
    assert report.marks(summary) == {}
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| random(fraction=0.1) | finetune | 1 | 0.9000 | 1.0000 |" in md and "±" not in md.split("\n\n")[0]
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert (rows[1]["forget_acc_mean"], rows[1]["forget_acc_ci95"], rows[1]["forget_acc_std"]) == ("0.9", "", "")


def test_write_files_marks_seeds_runs_and_pngs(sweep, tmp_path):
    out = tmp_path / "report"
    summary = report.summarise([sweep], out)
    assert summary.figures == [out / n for n in ("forget_vs_acc.png", "avg_gap.png", "time.png")]
    assert summary.files[:2] == [out / "summary.csv", out / "summary.md"]
    md = (out / "summary.md").read_text()
    assert "| forget | unlearner | n | forget_acc | retain_acc | avg_gap | speedup | train_seconds |" in md
    assert f"| **0.9800 ± 0.0000** | 0.0400 ± {T1 * 0.01:.4f} † |" in md and "| forget | unlearner | n | zeta |" in md
    assert "95% Student-t interval" in md and "t = 12.71 for n = 2" in md
    assert "4: no results.json (failed or unfinished job), skipped" in md
    assert "trajectory.png skipped: no trajectory" in md and md.endswith("![time](time.png)\n")  # shows the figures
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["unlearner"] for r in rows] == ["gold", "finetune", "gradient_ascent"]
    assert float(rows[1]["forget_acc_ci95"]) == pytest.approx(T1 * 0.01) and rows[1]["best"] == "retain_acc"
    assert rows[2]["tied"] == "forget_acc;avg_gap;train_seconds"
    assert rows[2]["seeds"] == "seed=0,unlearn_seed=0;seed=1,unlearn_seed=1"  # the seed keys that vary
    assert rows[2]["runs"] == f"{sweep / '2'};{sweep / '3'}"  # outside the working directory: absolute
    for path in summary.figures:
        assert path.read_bytes()[:8] == PNG


def test_gold_tuned_search_rows_short_labels_sorted_by_objective(tmp_path):
    search = {"objective": "unlearn/avg_gap_val", "tuning": "gold-tuned"}
    for i, (lr, gap) in enumerate([(0.0123456789012345, 3.0), (0.1987654321098765, 1.0), (0.05, 2.0)]):
        fake_run(tmp_path / str(i), "finetune", 0, {"forget_acc": 0.9, "avg_gap_val": gap, "avg_gap": 9.0},
                 {"forget_acc": 0.8}, extra_cfg={"optimizer": {"lr": lr}}, top=search)
    summary = report.summarise([tmp_path], tmp_path / "out")
    labels = [r.labels["unlearner"] for r in summary.rows]
    assert labels == ["gold", "finetune[lr=0.199]", "finetune[lr=0.05]", "finetune[lr=0.0123]"]  # best first
    assert summary.objective == "avg_gap_val" and summary.columns[0] == "avg_gap_val"
    assert [r.tuning for r in summary.rows[1:]] == ["gold-tuned"] * 3
    assert "| forget | unlearner | tuning | n | avg_gap_val |" in (tmp_path / "out" / "summary.md").read_text()
    assert {r["tuning"] for r in csv.DictReader((tmp_path / "out" / "summary.csv").open())} == {"", "gold-tuned"}
    assert (tmp_path / "out" / "objective.png").exists() and not (tmp_path / "out" / "avg_gap.png").exists()
    fig = report_plots.gap_bars(summary, report_plots.colours(labels[1:]))
    bars = fig.axes[0].containers[0]
    assert [b.get_width() for b in bars] == [1.0, 2.0, 3.0] and "avg_gap_val" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_hyperparameter_labels_keep_rows_apart_with_few_digits(tmp_path):
    fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.9}, {"forget_acc": 0.8}, extra_cfg={"lr": 0.1})
    fake_run(tmp_path / "1", "finetune", 1, {"forget_acc": 0.7}, {"forget_acc": 0.8}, extra_cfg={"lr": 0.1})
    fake_run(tmp_path / "2", "finetune", 0, {"forget_acc": 0.5}, {"forget_acc": 0.8}, extra_cfg={"lr": 0.10001})
    rows = {r.labels["unlearner"]: r for r in summary_of(tmp_path).rows}
    assert set(rows) == {"gold", "finetune[lr=0.1]", "finetune[lr=0.10001]"}  # 3 digits would merge them
    assert rows["finetune[lr=0.1]"].n == 2 and rows["finetune[lr=0.10001]"].n == 1


@pytest.fixture
def two_settings(tmp_path) -> report.Summary:
    """Random and class-wise forgetting, three methods, two seeds, with trajectories (both key names)."""
    gold = {"forget_acc": 0.9, "retain_acc": 0.99, "test_acc": 0.95, "mia_loss_auc": 0.5}
    for forget in ("random", "class"):
        for k, method in enumerate(("random_label", "finetune", "gradient_ascent")):
            for seed in (0, 1):
                run = fake_run(tmp_path / f"{forget}{k}{seed}", method, seed,
                               {"forget_acc": 0.8 + 0.05 * k, "retain_acc": 0.95, "test_acc": 0.9 + 0.02 * seed,
                                "avg_gap": 0.05 * seed + 0.01, "speedup": 2.0 + seed}, gold, 0.02 + 3 * seed,
                               forget=forget)
                fake_trajectory(run, "trajectory", {0: 1.0, 5: 0.9 - 0.1 * k, 9: 0.8})
    return summary_of(tmp_path)


def drawn_colours(fig) -> dict[str, str]:
    """Method → colour as drawn: error-bar points and lines by their label, bars by their tick label."""
    fig.canvas.draw()  # fills in the categorical tick labels
    out = {}

    def method(label: str) -> bool:
        return not label.startswith("_") and "gold" not in label and not label.startswith(("1×", "none"))

    for ax in fig.axes:
        for line in ax.get_lines():
            if method(line.get_label()):
                out.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
        for box in ax.containers:
            if isinstance(box, ErrorbarContainer) and method(box.get_label()):
                out.setdefault(box.get_label(), set()).add(to_hex(box.lines[0].get_color()))
            elif isinstance(box, BarContainer):
                ticks = ax.get_yticklabels() if box.orientation == "horizontal" else ax.get_xticklabels()
                for patch, tick in zip(box, ticks, strict=True):
                    out.setdefault(tick.get_text(), set()).add(to_hex(patch.get_facecolor()))
    return out


def test_palette_is_colour_blind_safe_and_distinct_within_a_figure():
    every = report_plots.colours(report.catalogue())
    methods = [m for m in report.catalogue() if m != "none"]
    styles = {(every[m], *report_plots.style(every, m)) for m in methods}
    assert len(styles) == len(methods)  # the whole catalogue in one figure: colour, marker or line tells them apart
    assert len({every[m] for m in methods[:len(report_plots.PALETTE)]}) == len(report_plots.PALETTE)
    assert every["none"] == report_plots.REFERENCE and every["none"] not in report_plots.PALETTE
    assert report_plots.PALETTE[:6] == ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9")  # Okabe-Ito
    few = report_plots.colours(["scrub", "finetune", "gradient_ascent", "my_method"])
    assert few == dict(zip(["finetune", "gradient_ascent", "scrub", "my_method"], report_plots.PALETTE[:4],
                           strict=False))  # catalogue order, a method outside it last
    # an Optuna study's trials are variants of one method: each its own colour, right after the method's
    study = report_plots.colours(["finetune[lr=0.1]", "finetune[lr=0.01]", "finetune", "scrub", "none"])
    assert len(set(study.values())) == 5 and study["finetune"] == report_plots.PALETTE[0]
    assert [study[k] for k in ("finetune[lr=0.01]", "finetune[lr=0.1]", "scrub")] == list(report_plots.PALETTE[1:4])


def test_figures_one_row_per_setting_fixed_colours_references_and_positive_intervals(two_settings):
    colour = report_plots.colours(["finetune", "gradient_ascent", "random_label", "my_method"])
    assert len(set(colour.values())) == 4
    figs = {f.__name__: f(two_settings, colour) for f in (report_plots.forget_vs_acc, report_plots.gap_bars,
                                                          report_plots.times, report_plots.trajectory)}
    shapes = {name: [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes] for name, fig in figs.items()}
    assert shapes == {"forget_vs_acc": [(2, 2)] * 4, "gap_bars": [(2, 1)] * 2, "times": [(2, 2)] * 4,
                      "trajectory": [(2, 3)] * 6}  # rows: settings; trajectory: forget, retain acc, MIA
    assert [ax.get_title() for ax in figs["gap_bars"].axes] == ["digits / mlp / class(classes=[3])\nn = 2",
                                                                "digits / mlp / random(fraction=0.1)\nn = 2"]
    for name, fig in figs.items():
        drawn = drawn_colours(fig)
        assert set(drawn) >= {"finetune", "gradient_ascent", "random_label"}, name
        assert all(drawn[m] == {colour[m]} for m in ("finetune", "gradient_ascent", "random_label")), name
    speed, seconds = figs["times"].axes[:2]
    assert [(line.get_xdata()[0], line.get_linestyle()) for line in speed.get_lines()
            if line.get_linestyle() == "--"] == [(1.0, "--")]  # gold: 1×
    assert seconds.get_xscale() == "log" and "gold" not in [t.get_text() for t in seconds.get_yticklabels()]
    assert [line.get_xdata()[0] for line in seconds.get_lines() if line.get_linestyle() == "--"] == [8.0]  # gold's
    assert not [c for ax in figs["times"].axes for c in ax.containers if isinstance(c, BarContainer)]  # points
    curves = [line for ax in figs["trajectory"].axes for line in ax.get_lines() if line.get_label() in colour]
    assert curves and all(line.get_marker() not in ("", "None", None) and line.get_markersize() >= 5
                          for line in curves)  # three points each: points, not a curve that hides them
    golds = [[line for line in ax.get_lines() if "gold" in line.get_label()] for ax in figs["trajectory"].axes]
    assert [len(g) for g in golds] == [1] * 6 and golds[0][0].get_ydata()[0] == 0.9
    stars = [c for ax in figs["forget_vs_acc"].axes for c in ax.containers if c.get_label() == "gold (retrained)"]
    assert len(stars) == 4  # gold once per panel
    for name, coords, low, high in (("gap_bars", [0], 0.0, math.inf), ("times", [0], 1e-300, math.inf),
                                    ("forget_vs_acc", [0, 1], 0.0, 1.0)):
        ends = [v for ax in figs[name].axes for c in ax.collections if isinstance(c, LineCollection)
                for seg in c.get_segments() for v in seg[:, coords].ravel()]
        assert ends and low <= min(ends) and max(ends) <= high, name  # error bars drawn, none past the bounds
    for fig in figs.values():
        plt.close(fig)


def test_trajectory_is_read_from_the_run_directory_file_first(tmp_path):
    from mu_lightning.tracking.trajectory import TrajectoryFile

    fake_trajectory(tmp_path / "a", "trajectory", {0: 1.0, 5: 0.5})  # the CSV logger's, older runs
    recorder = TrajectoryFile(tmp_path / "a", "unlearn")
    recorder.log_metrics({"train_loss": 2.0, "epoch": 0}, step=3)  # not a trajectory point: nothing written
    assert not recorder.path.exists()
    for step, value in ((0, 0.9), (9, 0.4)):
        recorder.log_metrics({f"trajectory/{m}": value for m in ("forget_acc", "retain_acc", "mia_loss_auc")}
                             | {"trajectory/gold_forget_acc": 0.5}, step=step)
    assert report.read_trajectory(tmp_path / "a") == {m: {0: 0.9, 9: 0.4} for m in report.TRAJECTORY}


def test_trajectory_reads_the_callbacks_keys_only(tmp_path):
    fake_trajectory(tmp_path / "a", "trajectory", {0: 1.0, 5: 0.5})
    fake_trajectory(tmp_path / "b", "unlearn", {0: 1.0, 7: 0.25})  # final metrics, not a trajectory
    assert report.read_trajectory(tmp_path / "a") == {m: {0: 1.0, 5: 0.5} for m in
                                                      ("forget_acc", "retain_acc", "mia_loss_auc")}
    assert report.read_trajectory(tmp_path / "b") == {}
    assert report.read_trajectory(tmp_path / "none") == {}


def test_trajectory_metrics_are_the_ones_the_callback_logs():
    from mu_lightning.callbacks.forget_retain import METRICS

    assert set(report.TRAJECTORY) <= set(METRICS)


def test_catalogue_is_the_config_group_with_the_baseline_first():
    files = sorted(p.stem for p in (ROOT / "conf" / "unlearner").glob("*.yaml"))
    assert report.catalogue() == ("none", *(f for f in files if f != "none"))


def test_cli_over_several_paths(sweep, tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "report.py"))["main"]
    with pytest.raises(SystemExit) as bad:
        main([str(sweep / "0"), str(sweep / "1")])
    assert bad.value.code == 2 and "--out is required" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no completed runs"):
        main([str(tmp_path / "nothing-here")])
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), str(sweep / "0"), str(sweep / "2"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, check=True)
    assert "| random(fraction=0.1) | finetune | 1 | 0.9500 |" in done.stdout


@pytest.mark.slow
def test_real_sweep_is_aggregated_by_the_hydra_callback(tmp_path):
    """A real 2 × 2 sweep as a subprocess: the callback writes the summary; a job made to look failed is skipped."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "dataset=synthetic", "dataset.source.num_samples=600",
           "train.epochs=3", "unlearner=none,finetune", "seed=0,1", f"hydra.sweep.dir={sweep}",
           f"paths.cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, timeout=600, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"})
    console = done.stdout + done.stderr
    assert console.count("config   dataset=synthetic") == 1 and "config of train" not in console  # once per sweep
    assert all((sweep / str(job) / "config_tree.log").exists() for job in range(4))  # the whole tree, every job
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["unlearner"], r["n"]) for r in rows] == [("gold", "2"), ("none", "2"), ("finetune", "2")]
    assert all(r["dataset"] == "synthetic" and r["forget"] == "random(fraction=0.1)" for r in rows)
    for name in ("forget_vs_acc.png", "time.png", "trajectory.png"):
        assert (sweep / name).read_bytes()[:8] == PNG

    (sweep / "3" / "results.json").unlink()  # job 3 is finetune, seed 1
    summary = report.summarise([sweep], tmp_path / "again")
    assert [(r.labels["unlearner"], r.n) for r in summary.rows] == [("gold", 2), ("none", 2), ("finetune", 1)]
    assert any(n.startswith(f"{sweep / '3'}: no results.json") for n in summary.notes)


def test_the_do_nothing_baseline_is_never_best_and_is_a_reference_line_in_the_figures(tmp_path):
    gold = {"forget_acc": 0.90, "retain_acc": 0.99}
    for seed in (0, 1):  # none: M itself, closest to M and free: it would win forget_acc and train_seconds
        fake_run(tmp_path / f"n{seed}", "none", seed, {"forget_acc": 0.9, "retain_acc": 0.99, "avg_gap": 0.5,
                                                        "flops": 0.0}, gold, unlearn_s=4e-6 * (1 + seed))
        fake_run(tmp_path / f"f{seed}", "finetune", seed, {"forget_acc": 0.8 + 0.01 * seed, "retain_acc": 0.9,
                                                            "avg_gap": 0.2, "flops": 5.0 + seed}, gold, 1.0 + seed)
        fake_run(tmp_path / f"g{seed}", "gradient_ascent", seed, {"forget_acc": 0.5, "retain_acc": 0.5 + 0.01 * seed,
                                                                   "avg_gap": 0.3, "flops": 9.0}, gold, 3.0 + seed)
    summary = summary_of(tmp_path)
    marked = report.marks(summary)
    baseline = [i for i, r in enumerate(summary.rows) if r.labels["unlearner"] == "none"]
    assert baseline and not any(i in by_row for by_row in marked.values() for i in baseline)
    assert marked["flops"] and marked["train_seconds"] and marked["forget_acc"]  # the others are still ranked
    md, out = report.markdown(summary, marked), tmp_path / "csv"
    assert "| none | 2 | 0.9000 ± 0.0000 |" in md and "never marked" in md
    report.write_csv(summary, marked, out)
    assert [(r["best"], r["tied"]) for r in csv.DictReader(out.open()) if r["unlearner"] == "none"] == [("", "")]
    colour = report_plots.colours(r.labels["unlearner"] for r in summary.rows if not r.gold)
    gap, cost = report_plots.gap_bars(summary, colour), report_plots.times(summary, colour)
    assert [t.get_text() for t in gap.axes[0].get_yticklabels()] == ["finetune", "gradient_ascent"]
    assert [line.get_xdata()[0] for line in gap.axes[0].get_lines() if line.get_label().startswith("none")] == [0.5]
    assert all("none" not in t.get_text() for ax in cost.axes for t in ax.get_yticklabels())
    assert "none (no unlearning) costs nothing, not drawn" in cost._suptitle.get_text()
    plt.close(gap), plt.close(cost)


def test_a_run_with_its_own_model_target_is_labelled_by_that_model(tmp_path):
    run = fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.9}, {"forget_acc": 0.8})
    config = json.loads((run / "results.json").read_text())
    config["config"]["model"]["_target_"] = "my.nets.WideNet"
    (run / "results.json").write_text(json.dumps(config))
    hydra = (run / ".hydra" / "hydra.yaml").read_text().replace("hydra:\n", "hydra:\n  overrides:\n    task:\n"
                                                                "    - model._target_=my.nets.WideNet\n")
    (run / ".hydra" / "hydra.yaml").write_text(hydra)
    assert {r.labels["model"] for r in summary_of(tmp_path).rows} == {"WideNet"}  # not the recorded choice, mlp


def test_metrics_own_speedup_and_train_seconds_win_over_derived_ones(tmp_path):
    fake_run(tmp_path / "0", "finetune", 0, {"forget_acc": 0.9, "speedup": 7.0, "train_seconds": 1.5},
             {"forget_acc": 0.8}, unlearn_s=2.0)
    (_, row) = summary_of(tmp_path).rows
    assert (row.mean("speedup"), row.mean("train_seconds")) == (7.0, 1.5)


def test_callback_logs_a_failure_instead_of_failing_the_sweep(tmp_path, caplog):
    from omegaconf import OmegaConf

    from mu_lightning.callbacks.aggregate import AggregateSweep

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    AggregateSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(blocker)}}}))
    assert f"aggregating {blocker} failed" in caplog.text
