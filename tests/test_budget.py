"""A compute budget (``budget.flops``, docs/metrics.md §5): the unlearning stage stops before the step that would
spend more than a fraction of the gold model's training FLOPs, one-shot work runs whole and is marked over budget,
``budget.flops=null`` changes nothing, and sweep reports rank methods within a budget and draw quality against
compute."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_hex
from omegaconf import open_dict

from mu_lightning.data.batches import TensorBatches
from mu_lightning.errors import ConfigError
from mu_lightning.models import MLP
from mu_lightning.runtime.checks import check_budget, check_config
from mu_lightning.stages import ClassifierModule
from mu_lightning.tracking import report
from mu_lightning.tracking.report import budget as report_budget
from mu_lightning.tracking.report import plots as report_plots
from tests.helpers import compose_cfg
from tests.test_efficiency import step_flops_per_sample
from tests.test_report import PNG, fake_run
from tests.test_stage_loop import BATCH, TRAINER, X, Y, plain, same_weights, sgd

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MLP = (64, 128, 64, 10)  # 8×8 digits, hidden [128, 64], 10 classes
PER_SAMPLE = step_flops_per_sample(DIGITS_MLP)  # FLOPs of one step, per sample of its batch, by hand


def numbers(results: dict) -> dict:
    """Every metric except wall-clock ones, which no seed can fix."""
    return {k: v for k, v in results["metrics"].items() if "seconds" not in k and "speedup" not in k}


def budgeted_fit(limit: int | None, hooked: bool = False, before: int = 0, **trainer_kwargs):
    """The plain loop's recipe (tests/test_stage_loop.py), one epoch, stopped by ``limit`` FLOPs; ``hooked``: a step
    hook sends the steps down Lightning's own path instead of the direct one; ``before``: samples of a counted pass
    (a one-shot method's work) before the fit. Returns the module and its trainer."""

    class Hooked(ClassifierModule):
        def on_after_backward(self):
            pass

    torch.manual_seed(0)
    module = (Hooked if hooked else ClassifierModule)(MLP([1, 8, 8], 10), epochs=1, batch_size=BATCH, optimizer=sgd)
    module.flop_limit, module.steps_per_batch = limit, trainer_kwargs.pop("steps_per_batch", 8)
    if before:
        module.tally.record(module.counted_step, ((X[:before], Y[:before]),))
        module.tally.count(module)
    trainer = L.Trainer(**{**TRAINER, "enable_progress_bar": False, **trainer_kwargs}, max_epochs=1, logger=False)
    trainer.fit(module, train_dataloaders=module.chunks(TensorBatches(X, Y, BATCH, shuffle=True, seed=0)))
    return module, trainer


@pytest.mark.parametrize(("hooked", "before", "trainer_kwargs"), [
    (False, 0, {}), (True, 0, {}),
    (False, 5 * BATCH, {}),  # one-shot work worth 5 steps came first: it is spent already
    # Lightning ignores should_stop until min_epochs is met, and each Lightning batch is one step (a monitor with a
    # step cadence): the stop must hold for every later batch, the last one of 8 samples included
    (False, 0, {"min_epochs": 1, "steps_per_batch": 1}),
], ids=["direct step", "Lightning's step", "after one-shot work", "min_epochs"])
def test_the_stage_stops_before_the_step_that_would_cross_the_limit(hooked, before, trainer_kwargs):
    """600 samples in batches of 16: 37 full steps, then one of 8. A limit of 10 full steps and a half leaves room for
    the 8-sample step but not the 11th full one: the fit stops there, for good, after the plain loop's 10 steps."""
    full = BATCH * step_flops_per_sample((64, 128, 64, 10))
    spent_before = before * full // BATCH
    module, trainer = budgeted_fit(spent_before + 10 * full + full // 2, hooked, before, **trainer_kwargs)
    assert (module.steps_taken, module.budget_stop, trainer.global_step) == (10, 10, 10)
    assert module.tally.flops == spent_before + 10 * full  # what on_train_end counts: the 8-sample step never ran
    assert same_weights(module.model, plain(10))  # the first ten steps, bit for bit


def test_a_limit_never_reached_takes_every_step_and_records_no_stop():
    module, _ = budgeted_fit(10**12)
    assert module.steps_taken == math.ceil(len(X) / BATCH) and module.budget_stop is None
    facts = module.budget_facts(0.5, 4 * module.tally.flops)
    assert facts["spent_fraction"] == 0.25 and not facts["exhausted"] and not facts["over_budget"]


def test_finetune_on_digits_stops_within_the_limit_computed_by_hand(run_pipeline):
    res = run_pipeline("unlearner=finetune", "budget.flops=0.01", fast=False, shared_cache=True)
    gold, unlearn = res["stages"]["gold"], res["stages"]["unlearn"]
    assert gold["flops"] == 20 * res["sizes"]["retain"] * PER_SAMPLE  # 20 epochs over D_r, by hand
    limit = math.floor(0.01 * gold["flops"])
    step = 64 * PER_SAMPLE  # finetune's digits batch; the budget ends inside its first epoch: every batch is full
    assert unlearn["flops"] <= limit < unlearn["flops"] + step  # the next step would have crossed it
    assert unlearn["steps"] == limit // step and unlearn["flops"] == unlearn["steps"] * step
    assert unlearn["budget"] == {"flops_fraction": 0.01, "gold_flops": gold["flops"], "flops_limit": limit,
                                 "flops_spent": unlearn["flops"], "spent_fraction": unlearn["flops"] / gold["flops"],
                                 "stopped_at_step": unlearn["steps"], "planned_steps": 5 * 19, "over_budget": False,
                                 "exhausted": True}  # 5 epochs of 19 batches were planned
    assert res["metrics"]["unlearn/flop_speedup"] == pytest.approx(gold["flops"] / unlearn["flops"])


def test_no_budget_changes_no_number(run_pipeline):
    """budget.flops=null gives what the project gave before the option existed (README's digits table, finetune,
    seed 0), and a budget too large to bind gives the same numbers: counting step costs during the fit moves nothing."""
    null = run_pipeline("unlearner=finetune", fast=False, shared_cache=True, out="null")
    assert [round(null["metrics"][f"unlearn/{s}_acc"], 4) for s in ("forget", "retain", "test")] == \
        [0.9535, 0.9794, 0.9415]
    assert "budget" not in null["stages"]["unlearn"] and null["stages"]["unlearn"]["steps"] == 95
    loose = run_pipeline("unlearner=finetune", "budget.flops=1000", fast=False, shared_cache=True, out="loose")
    assert numbers(loose) == numbers(null) and len(numbers(null)) > 20
    assert loose["stages"]["unlearn"]["budget"]["stopped_at_step"] is None
    assert not loose["stages"]["unlearn"]["budget"]["exhausted"]


def test_one_shot_work_over_the_budget_runs_whole_and_is_marked(run_pipeline):
    free = run_pipeline("unlearner=fisher", shared_cache=True, out="free")
    res = run_pipeline("unlearner=fisher", "budget.flops=0.01", shared_cache=True, out="over")
    spent = res["stages"]["unlearn"]["budget"]
    assert res["stages"]["unlearn"]["flops"] == free["stages"]["unlearn"]["flops"] > spent["flops_limit"]
    assert numbers(res) == numbers(free)  # the same edit: nothing was cut short
    assert spent["over_budget"] and spent["exhausted"] and spent["stopped_at_step"] is None
    assert any("over budget.flops=0.01: it runs whole" in w for w in res["warnings"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["budget.flops=0"], r"budget.flops=0 is not allowed: it takes a number > 0"),
    (["budget.flops=-0.5"], r"budget.flops=-0.5 is not allowed"),
    (["budget.flops=lots"], r"budget.flops='lots' is not allowed"),
    (["budget.flops=true"], r"budget.flops=True is not allowed"),
    (["budget.flops=0.1", "gold.checkpoint=g.pt"], r"with gold.checkpoint: a model made elsewhere records no"),
    (["budget.flops=0.1", "unlearned.checkpoint=u.pt"], r"with unlearned.checkpoint: .* runs no unlearner"),
    (["budget.flops=0.1", "trainer=ddp_cpu"], r"needs one process, not trainer.strategy=ddp"),
])
def test_bad_budgets_are_refused_in_one_line(tmp_path, overrides, message):
    cfg = compose_cfg(tmp_path, overrides)
    with pytest.raises(ConfigError, match=message) as err:
        check_budget(cfg)
    assert "\n" not in str(err.value)


def test_the_budget_check_runs_with_the_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="budget.flops=0 is not allowed"):
        check_config(compose_cfg(tmp_path, ["budget.flops=0"]))
    check_budget(compose_cfg(tmp_path, ["budget.flops=2"]))  # more than gold's FLOPs is a budget too
    cfg = compose_cfg(tmp_path)
    with open_dict(cfg):
        del cfg.budget  # a config from before the option
    check_budget(cfg)


def budget_run(path: Path, method: str, seed: int, fraction: float | None, gap: float | None, spent: float,
               stop: int | None = None, over: bool = False, gold: dict | None = None) -> Path:
    """A finished run at budget ``fraction`` (None: no budget) that spent ``spent`` × gold's FLOPs, with the facts
    the pipeline records."""
    run = fake_run(path, method, seed, {"avg_gap": gap, "forget_acc": 0.9}, gold or {"forget_acc": 0.9},
                   top={"budget": {"flops": fraction}})
    res = json.loads((run / "results.json").read_text())
    res["stages"]["gold"]["flops"], res["stages"]["unlearn"]["flops"] = 1000, round(1000 * spent)
    if fraction is not None:
        res["stages"]["unlearn"]["budget"] = {"flops_fraction": fraction, "stopped_at_step": stop,
                                              "planned_steps": 50, "over_budget": over}
    (run / "results.json").write_text(json.dumps(res))
    return run


@pytest.fixture
def budget_sweep(tmp_path) -> Path:
    """Finetune stopped by budgets 0.01 and 0.1 and run once without one; gradient ascent within both; fisher's
    one-shot edit over both; two seeds each; gold's noise floor measured (metric=seeds: gold/avg_gap)."""
    floor = [{"forget_acc": 0.9, "avg_gap": 0.29}, {"forget_acc": 0.9, "avg_gap": 0.31}]
    for seed in (0, 1):
        spread = 0.01 * seed
        for fraction, gap in ((0.01, 3.0), (0.1, 1.0)):
            budget_run(tmp_path / f"ft{fraction}-{seed}", "finetune", seed, fraction, gap + spread, fraction,
                       stop=round(500 * fraction), gold=floor[seed])
            budget_run(tmp_path / f"ga{fraction}-{seed}", "gradient_ascent", seed, fraction, 2.0 + spread, 0.005,
                       gold=floor[seed])
            budget_run(tmp_path / f"fi{fraction}-{seed}", "fisher", seed, fraction, 0.5 + spread, 0.5, over=True,
                       gold=floor[seed])
        budget_run(tmp_path / f"ft-free-{seed}", "finetune", seed, None, 0.1 + spread, 0.25, gold=floor[seed])
    return tmp_path


def test_rows_at_different_budgets_are_never_compared(budget_sweep, tmp_path):
    summary = report.summarise([budget_sweep], tmp_path / "out")
    settings = [(r.labels["budget"], r.labels["unlearner"]) for r in summary.rows]
    assert settings == [("", "gold"), ("", "finetune"),
                        *[(b, m) for b in ("0.01× gold FLOPs", "0.1× gold FLOPs")
                          for m in ("gold", "finetune", "fisher", "gradient_ascent")]]
    marked = report.marks(summary)["avg_gap"]
    best = {summary.rows[i].labels["budget"]: summary.rows[i].labels["unlearner"] for i in marked}
    # fisher (0.505) is best at both budgets; finetune without a budget (0.105) is no rival: another setting
    assert best == {"0.01× gold FLOPs": "fisher", "0.1× gold FLOPs": "fisher"} and len(marked) == 2
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| forget | budget | unlearner |" in md and "| random(fraction=0.1) | 0.1× gold FLOPs | fisher | 2 |" in md
    assert "finetune at 0.01× gold FLOPs: stopped by the budget after 5 of 50 steps (spent 0.01× gold FLOPs)" in md
    assert "fisher at 0.1× gold FLOPs: over budget, spent 0.5× gold FLOPs: its one-shot work runs whole" in md
    assert "gradient_ascent at" not in md  # within its budget: nothing to say
    fig = report_plots.gap_bars(summary, report_plots.colours(r.labels["unlearner"] for r in summary.rows))
    assert fig.axes[1].get_title() == "digits / mlp / random(fraction=0.1)\nbudget 0.01× gold FLOPs\nn = 2"
    plt.close(fig)
    assert "![quality_vs_compute](quality_vs_compute.png)" in md and "no line for gold" not in md
    with (tmp_path / "out" / "summary.csv").open() as f:
        assert {r["budget"] for r in csv.DictReader(f)} == {"", "0.01× gold FLOPs", "0.1× gold FLOPs"}
    assert (tmp_path / "out" / "quality_vs_compute.png").read_bytes()[:8] == PNG


def test_quality_vs_compute_lines_markers_log_axis_and_noise_floor(budget_sweep):
    summary = report.aggregate(*report.find_runs([budget_sweep]))
    colour = report_plots.colours(r.labels["unlearner"] for r in summary.rows if not r.gold)
    fig = report_budget.quality_vs_compute(summary, colour)
    fig.canvas.draw()  # sets the tick labels
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert to_hex(lines["finetune"].get_color()) == colour["finetune"]  # the colour of every other figure
    assert list(lines["finetune"].get_xdata()) == pytest.approx([0.01, 0.1, 0.25])  # spent, the unlimited run last
    assert list(lines["finetune"].get_ydata()) == pytest.approx([3.005, 1.005, 0.105])  # mean over two seeds
    assert ax.get_xscale() == "log" and "gold model's training FLOPs" in ax.get_xlabel()  # 0.005 to 0.5
    assert "Avg. Gap" in ax.get_ylabel()
    assert sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_label() == "budget (budget.flops)") \
        == [0.01, 0.1]
    markers = {line.get_label(): (line.get_marker(), line.get_markerfacecolor()) for line in ax.get_lines()
               if not len(line.get_xdata())}
    assert markers == {"stopped by its budget": ("o", "k"), "finished within its budget": ("o", "white"),
                       "over budget (one-shot work runs whole)": ("X", "k"), "no budget": ("s", "k")}
    labels = sorted((t.xy, t.get_text()) for t in ax.texts)  # where the budget did not stop a method: its budgets
    assert labels == [(pytest.approx((0.005, 2.005)), "budget 0.01, 0.1"), (pytest.approx((0.5, 0.505)),
                                                                          "budget 0.01, 0.1")]
    (band,) = ax.patches  # gold's noise floor: 0.3 ± t_{0.975,1} · 0.01
    assert (band.get_y(), band.get_height()) == pytest.approx((0.3 - 12.7062 * 0.01, 2 * 12.7062 * 0.01), abs=1e-4)
    assert [line.get_ydata()[0] for line in ax.get_lines() if "gold" in line.get_label()] == pytest.approx([0.3])
    assert ax.get_legend() is None and fig.legends  # one legend, outside the panel
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5"]
    plt.close(fig)


def test_without_budgets_no_figure_and_without_seeds_no_band(tmp_path):
    fake_run(tmp_path / "plain", "finetune", 0, {"avg_gap": 1.0}, {"forget_acc": 0.9})
    plain_summary = report.aggregate(*report.find_runs([tmp_path / "plain"]))
    assert report_budget.figures(plain_summary) == [] and report_budget.notes(plain_summary) == []
    budget_run(tmp_path / "b" / "0", "finetune", 0, 0.1, 1.0, 0.1, stop=5)
    budget_run(tmp_path / "b" / "1", "gradient_ascent", 0, 0.1, 2.0, 0.09)
    budget_run(tmp_path / "b" / "2", "scrub", 0, 0.1, None, 0.1, stop=7)  # its Avg. Gap is null (an MIA at chance)
    summary = report.aggregate(*report.find_runs([tmp_path / "b"]))
    notes = report_budget.notes(summary)
    assert "quality_vs_compute.png: no line for gold's noise floor (the gold row's Avg. Gap, which only " \
           "metric=seeds measures)" in notes
    assert "scrub at 0.1× gold FLOPs: stopped by the budget after 7 of 50 steps (spent 0.1× gold FLOPs)" in notes
    assert "quality_vs_compute.png leaves out scrub at 0.1× gold FLOPs: no Avg. Gap in their results (see their " \
           "warnings)" in notes
    fig = report_budget.quality_vs_compute(summary, report_plots.colours(["finetune", "gradient_ascent"]))
    assert not fig.axes[0].patches and fig.axes[0].get_xscale() == "linear"  # no band; 0.09 to 0.1: no decade
    assert fig.axes[0].get_xlabel().endswith("not drawn (no Avg. Gap): scrub at 0.1× gold FLOPs")
    assert "needs metric=seeds" in fig._suptitle.get_text()
    plt.close(fig)


@pytest.mark.slow
def test_budget_sweep_on_digits_draws_quality_against_compute(tmp_path):
    """The issue's sweep: three methods at three budgets, as a subprocess multirun; every job within its limit."""
    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "unlearner=finetune,scrub,gradient_ascent",
                          "budget.flops=0.05,0.1,0.2", "logger=none", f"hydra.sweep.dir={sweep}",
                          f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert len(jobs) == 9
    for res in jobs:
        spent = res["stages"]["unlearn"]["budget"]
        assert res["stages"]["unlearn"]["flops"] == spent["flops_spent"] <= spent["flops_limit"] == \
            math.floor(spent["flops_fraction"] * res["stages"]["gold"]["flops"])
    stopped = {(r["config"]["budget"]["flops"], r["stages"]["unlearn"]["method"]) for r in jobs
               if r["stages"]["unlearn"]["budget"]["stopped_at_step"] is not None}
    assert {(f, m) for f in (0.05, 0.1, 0.2) for m in ("Finetune", "SCRUB")} <= stopped  # they spend 0.25 and 0.29
    assert not any(m == "GradientAscent" for _, m in stopped)  # it spends 0.017: within every budget
    assert (sweep / "quality_vs_compute.png").read_bytes()[:8] == PNG
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["unlearner"] for r in rows if r["budget"] == "0.1× gold FLOPs"] == \
        ["gold", "finetune", "gradient_ascent", "scrub"]
