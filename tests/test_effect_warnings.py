"""Effect warnings (docs/metrics.md §9): an unlearner with no effect, a damaged model, an attack that learned nothing
(its score null), an original model that does not memorise; their tags in results.json, the log, the sweep summary
and its figures; and every unlearner on a user's tensor file either changes D_f or carries a warning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from omegaconf import OmegaConf

from mu_lightning.errors import ConfigError
from mu_lightning.metrics import CACHE, EvalContext, check_config, mia
from mu_lightning.metrics import warnings as w
from mu_lightning.metrics.fast import _summary, summary
from mu_lightning.models import MLP
from mu_lightning.tracking import report
from mu_lightning.tracking.report import plots
from tests.helpers import make_data
from tests.test_report import fake_run

UNLEARNERS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "unlearner").glob("*.yaml"))


def gaussian_file(path: Path, separation: float, n: int = 1000, dim: int = 16) -> list[str]:
    """A user's own data: 10-class Gaussian features, standardised per feature, saved as .npz; the overrides that
    read it with the default MLP."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    x = rng.normal(0, separation, (10, dim))[y] + rng.normal(0, 1, (n, dim))
    np.savez(path, x=((x - x.mean(0)) / x.std(0)).astype(np.float32), y=y)
    return ["dataset=tensor_file", f"dataset.path={path}", f"dataset.input_shape=[{dim}]", "dataset.num_classes=10",
            "model=mlp", "logger=none"]


def kinds(results: dict) -> list[str]:
    return [w.kind(m) for m in results["warnings"]]


# --- no effect ------------------------------------------------------------------------------------------------------

def test_gradient_ascent_too_small_to_matter_has_no_effect_and_random_label_has(run_pipeline, caplog):
    """GA for one epoch at lr 1e-4 moves the weights, so the bitwise rule is silent, but M_u predicts D_f exactly as M
    does while gold changed several predictions: "no effect", in results.json and the log. Random labels change D_f."""
    tiny = run_pipeline("unlearner=gradient_ascent", "unlearner.epochs=1", "unlearner.optimizer.lr=1e-4",
                        "callbacks.forget_retain=null", shared_cache=True)
    m = tiny["metrics"]
    assert m["unlearn/weight_dist_original"] > 0 and m["original/gold_agreement_forget"] < 0.99
    assert m["unlearn/forget_acc"] == m["original/forget_acc"]
    (found,) = [msg for msg in tiny["warnings"] if w.kind(msg) == w.NO_EFFECT]
    assert "agree with M's on 100.00%" in found and "changed no weight" not in found
    assert any(r.levelname == "WARNING" and found in r.getMessage() for r in caplog.records)
    real = run_pipeline("unlearner=random_label", "callbacks.forget_retain=null", shared_cache=True)
    assert w.NO_EFFECT not in kinds(real)


def test_no_effect_rule_by_hand():
    gold_changed = {"unlearn": 0.995, "gold": 0.96, "n": 200}
    assert w.kind(w.no_effect_warning(gold_changed, {}, None, 0.99)[0]) == w.NO_EFFECT
    assert w.no_effect_warning({**gold_changed, "unlearn": 0.985}, {}, None, 0.99) == []  # M_u changed 3 of 200
    assert w.no_effect_warning({**gold_changed, "gold": 0.995}, {}, None, 0.99) == []  # retraining changed nothing
    # the gold noise floor (other gold seeds): M_u's forget accuracy moved 0.002 < 0.01 while gold's moved 0.05
    accs = {"original/forget_acc": 0.95, "unlearn/forget_acc": 0.948, "gold/forget_acc": 0.90}
    moved = {**gold_changed, "unlearn": 0.97}
    assert "gold noise floor 0.0100" in w.no_effect_warning(moved, accs, 0.01, 0.99)[0]
    assert w.no_effect_warning(moved, accs, None, 0.99) == []  # no floor known (metric=fast)
    assert w.no_effect_warning(moved, {**accs, "unlearn/forget_acc": 0.93}, 0.01, 0.99) == []


def test_gold_noise_floor_is_the_mean_forget_accuracy_distance_of_the_other_gold_seeds():
    from types import SimpleNamespace

    y = torch.zeros(10, dtype=torch.long)

    def right(k: int) -> torch.Tensor:  # logits whose top class is the label on the first k samples
        return torch.tensor([[1.0, 0.0]] * k + [[0.0, 1.0]] * (10 - k))

    z = {"gold": right(8), "gold_seed1": right(6), "gold_seed2": right(10)}
    ctx = SimpleNamespace(models=dict.fromkeys(["original", "gold", "unlearn", "gold_seed1", "gold_seed2"]),
                          data=SimpleNamespace(ids={"forget": y}, samples=None), labels=lambda s: y,
                          logits=lambda m, s: z[m])
    assert w.gold_floor(ctx) == pytest.approx(0.2)  # |0.6 − 0.8| and |1.0 − 0.8|
    ctx.models = dict.fromkeys(["original", "gold", "unlearn"])
    assert w.gold_floor(ctx) is None  # metric=fast trains no other gold seed


# --- damaged --------------------------------------------------------------------------------------------------------

def test_damaged_at_chance_and_above_chance_by_hand():
    m = {"original/retain_acc": 0.99, "gold/retain_acc": 0.98, "original/test_acc": 0.95, "gold/test_acc": 0.94}
    at_chance = w.accuracy_warnings({**m, "unlearn/retain_acc": 0.11, "unlearn/test_acc": 0.92}, 10)
    assert len(at_chance) == 1 and at_chance[0].startswith("damaged: M_u's retain accuracy 0.1100 is at chance")
    above = w.accuracy_warnings({**m, "unlearn/retain_acc": 0.97, "unlearn/test_acc": 0.70}, 10)
    assert above == ["damaged: M_u's test accuracy 0.7000 is 0.2400 below gold's 0.9400 (rule: more than "
                     "metric.warnings.damage_margin = 0.1 below), so the unlearner broke what retraining keeps"]
    within = {**m, "unlearn/retain_acc": 0.97, "unlearn/test_acc": 0.85}
    assert w.accuracy_warnings(within, 10) == []  # 0.09 below gold: within the margin
    assert [w.kind(x) for x in w.accuracy_warnings(within, 10, margin=0.05)] == [w.DAMAGED]


def test_gradient_ascent_with_a_huge_learning_rate_is_damaged(run_pipeline):
    res = run_pipeline("unlearner=gradient_ascent", "unlearner.optimizer.lr=3.0", "unlearner.epochs=3",
                       "unlearner.grad_clip=null", "callbacks.forget_retain=null", shared_cache=True)
    m = res["metrics"]
    assert m["unlearn/retain_acc"] < m["gold/retain_acc"] - 0.10
    assert w.DAMAGED in kinds(res)


# --- uninformative attacks ------------------------------------------------------------------------------------------

def test_an_attack_at_chance_on_its_own_training_data_reports_null():
    """Same entropies for members and non-members: the regression learns nothing (balanced accuracy 0.5 exactly,
    every point called non-member) and its score is None; separable entropies: balanced accuracy 1 and a number."""
    same = torch.tensor([0.2, 0.4, 0.6, 0.8] * 5)
    blind = mia.entropy_attack(same, same.clone(), torch.tensor([0.1, 0.9]))
    assert blind["fit_bacc"] == 0.5 and mia.reported(blind, 0.01) is None
    forget = torch.tensor([0.1] * 3 + [2.0] * 7)
    sharp = mia.entropy_attack(torch.full((30,), 0.1), torch.full((20,), 2.0), forget)
    assert sharp == {"score": pytest.approx(0.3), "fit_bacc": 1.0} and mia.reported(sharp, 0.01) == pytest.approx(0.3)
    svc_blind = mia.svc_attack(same, same.clone(), forget)
    assert svc_blind["fit_bacc"] == 0.5 and mia.reported(svc_blind, 0.01) is None
    assert mia.svc_attack(torch.full((30,), 0.99), torch.full((20,), 0.2), forget)["fit_bacc"] == 1.0
    assert mia.informative(0.515, 0.01) and not mia.informative(0.51, 0.01) and not mia.informative(0.45, 0.01)


def test_null_scores_the_warning_and_what_is_built_on_them():
    """Logits whose entropy and confidence are the same on D_r and D_test: both attacks null in the summary, strict
    JSON, one warning per attack naming the models and their fits; Avg. Gap and ToW-MIA null, ToW a number."""
    from types import SimpleNamespace

    from mu_lightning.metrics import gold as g

    gen = torch.Generator().manual_seed(0)
    row = torch.randn(1, 3, generator=gen)
    z = {"forget": row.repeat(6, 1), "retain": row.repeat(40, 1), "test": row.repeat(20, 1)}
    y = {s: torch.zeros(len(v), dtype=torch.long) for s, v in z.items()}
    ctx = SimpleNamespace(logits=lambda m, s: z[s], labels=lambda s: y[s], cfg=OmegaConf.create({"warnings": {}}))
    out = _summary(ctx, "unlearn")
    assert out["mia_entropy_member_rate"] is None and out["mia_efficacy"] is None
    assert out["mia_entropy_fit_bacc"] == 0.5 == out["mia_efficacy_fit_bacc"]
    json.dumps(out, allow_nan=False)
    metrics = {f"{m}/{k}": v for m in ("unlearn", "gold") for k, v in out.items()}
    found = w.attack_warnings(metrics, 0.01)
    assert [w.kind(x) for x in found] == [w.UNINFORMATIVE] * 2
    assert "entropy attack (mia_entropy_member_rate)" in found[0] and "M_g (0.5000), M_u (0.5000)" in found[0]
    assert g.avg_gap(out, out) is None and g.tow(out, out, mia=True) is None and g.tow(out, out) == 1.0


def test_seed_means_are_null_where_a_seed_s_attack_was_uninformative(monkeypatch):
    from mu_lightning.metrics import seeds

    parts = {"forget_acc": 0.9, "retain_acc": 0.99, "test_acc": 0.95, "mia_efficacy": 0.2}
    per_model = {"unlearn": parts, "unlearn_seed1": {**parts, "mia_efficacy": None}, "gold": parts, "gold_seed1": parts}
    monkeypatch.setattr(seeds, "summary", lambda ctx, m: per_model[m])
    out = seeds.intervals(None, ["unlearn", "unlearn_seed1"], ["gold", "gold_seed1"])
    assert out["unlearn/mia_efficacy_mean"] is None and out["unlearn/avg_gap_mean"] is None
    assert out["unlearn/tow_mean"] == 1.0 and out["gold/mia_efficacy_mean"] == pytest.approx(0.2)
    json.dumps(out, allow_nan=False)


def test_the_memo_keys_null_scores_by_the_margin(tmp_path):
    """The same models under two attack margins: two memo entries, each with its own answer, never a stale one."""
    data = make_data(tmp_path, "dataset=synthetic", "dataset.source.num_samples=300")
    torch.manual_seed(0)
    net = MLP([1, 8, 8], 10, hidden=[16])
    models = {"original": net, "gold": net, "unlearn": net}

    def at(margin: float) -> dict:
        cfg = OmegaConf.create({"tier": "fast", "warnings": {"attack_margin": margin}})
        return summary(EvalContext(models=dict(models), data=data, stages={}, seconds={}, cfg=cfg, gold=None,
                                   unlearned=None, fresh_model=None), "unlearn")

    CACHE.clear()
    strict, lenient = at(1.0), at(0.0)
    assert len(CACHE) == 2 and strict["mia_entropy_fit_bacc"] == lenient["mia_entropy_fit_bacc"]
    assert strict["mia_entropy_member_rate"] is None and strict["mia_efficacy"] is None
    assert (lenient["mia_entropy_member_rate"] is None) == (lenient["mia_entropy_fit_bacc"] <= 0.5)
    assert at(1.0)["mia_efficacy"] is None and len(CACHE) == 2  # from the memo, under its own key


# --- the original model -------------------------------------------------------------------------------------------

def test_original_does_not_memorise_by_hand():
    flat = {"original/retain_acc": 0.975, "original/test_acc": 0.97}
    (found,) = w.memorisation_warning(flat, 0.02, classes_forgotten=False)
    assert found.startswith("original does not memorise: M's retain accuracy 0.9750 is within 0.02 of its test")
    assert w.memorisation_warning(flat, 0.02, classes_forgotten=True) == []  # class forgetting removes the class
    assert w.memorisation_warning({**flat, "original/retain_acc": 0.995}, 0.02, False) == []  # a gap of 0.025


def test_separable_user_data_warns_first_that_the_original_does_not_memorise(run_pipeline, tmp_path):
    """Well-separated classes: M is perfect on train and test, so both attacks fit at chance and report null, and the
    run's first warning says that M memorises nothing."""
    res = run_pipeline(*gaussian_file(tmp_path / "easy.npz", separation=3.0), "unlearner=finetune",
                       "callbacks.forget_retain=null", fast=False)
    assert kinds(res)[0] == w.MEMORISATION and w.UNINFORMATIVE in kinds(res)
    assert res["metrics"]["original/mia_entropy_member_rate"] is None
    assert res["metrics"]["original/mia_entropy_fit_bacc"] <= 0.51
    json.dumps(res, allow_nan=False)


# --- configuration and tags -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("warnings", "message"), [
    ({"damage_margin": 2}, r"metric\.warnings\.damage_margin=2 is not allowed: use a number in \[0, 1\]"),
    ({"attack_margin": "high"}, r"metric\.warnings\.attack_margin='high' is not allowed"),
    ({"damage": 0.1}, r"metric\.warnings\.damage is not a setting: use no_effect_agreement, damage_margin"),
])
def test_bad_warning_settings_name_the_option(warnings, message):
    with pytest.raises(ConfigError, match=message):
        check_config(OmegaConf.create({"tier": "fast", "warnings": warnings}))


def test_every_kind_is_read_back_by_the_report():
    for kind in w.KINDS:
        assert w.kind(f"{kind}: x") == kind == report.runs.warning_kind(f"request2: {kind}: x")
    assert w.kind("GradientAscent's loss exploded: 80") is None
    assert report.runs.warning_kind("SSD changed no weight: M_u equals M") == "other"  # results of older versions
    assert set(report.runs.SETTING_WARNINGS) <= set(w.KINDS)


# --- the sweep report ---------------------------------------------------------------------------------------------

@pytest.fixture
def warned_sweep(tmp_path) -> Path:
    """Three methods × two seeds: finetune with no effect in one run, gradient ascent damaged in both, random labels
    clean; seed 0's original model does not memorise, so each of its runs says so first."""
    tags = {"finetune": [["no effect: x"], []], "gradient_ascent": [["damaged: x", "damaged: y"], ["damaged: x"]],
            "random_label": [[], []]}
    gold = {"forget_acc": 0.9, "retain_acc": 0.99, "test_acc": 0.95, "avg_gap": 0.0}
    for method, per_seed in tags.items():
        for seed, found in enumerate(per_seed):
            run = fake_run(tmp_path / f"{method}{seed}", method, seed,
                           {"forget_acc": 0.93, "retain_acc": 0.95, "test_acc": 0.9, "avg_gap": 2.0 + seed}, gold)
            res = json.loads((run / "results.json").read_text())
            setting = ["original does not memorise: z"] if seed == 0 else []
            (run / "results.json").write_text(json.dumps({**res, "warnings": setting + found}))
    return tmp_path


def test_summary_counts_warnings_per_row(warned_sweep, tmp_path):
    summary = report.summarise([warned_sweep], tmp_path / "out")
    assert [(r.labels["unlearner"], r.warning_text(), r.warned) for r in summary.rows] == [
        ("gold", "original does not memorise (1/2)", False),
        ("finetune", "original does not memorise (1/2); no effect (1/2)", True),
        ("gradient_ascent", "original does not memorise (1/2); damaged (2/2)", True),
        ("random_label", "original does not memorise (1/2)", False)]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| train_seconds | warnings |" in md and "| original does not memorise (1/2); damaged (2/2) |" in md
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [r["warnings"] for r in rows] == [row.warning_text() for row in summary.rows]


def test_figures_mark_methods_with_a_warning(warned_sweep):
    summary = report.aggregate(*report.find_runs([warned_sweep]))
    colour = plots.colours(["finetune", "gradient_ascent", "random_label"])
    fig = plots.forget_vs_acc(summary, colour)
    points = [c for ax in fig.axes for c in ax.containers if c.get_label() in colour]
    hollow = {c.get_label(): to_hex(c.lines[0].get_markerfacecolor()) == "#ffffff" for c in points}
    assert hollow == {"finetune": True, "gradient_ascent": True, "random_label": False}
    assert sum(t.get_text() == "!" for ax in fig.axes for t in ax.texts) == 2 * len(fig.axes)  # two per panel
    assert plots.WARNED in [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    bars = plots.gap_bars(summary, colour)
    (patches,) = [c for c in bars.axes[0].containers if isinstance(c, BarContainer)]
    assert [p.get_hatch() for p in patches] == ["//", "//", None]
    for figure in (fig, bars):
        plt.close(figure)


# --- every unlearner on a user's tensor file ------------------------------------------------------------------------

def forget_agreement(run: Path) -> float:
    logits = torch.load(run / "logits.pt")["logits"]
    return (logits["unlearn"]["forget"].argmax(1) == logits["original"]["forget"].argmax(1)).double().mean().item()


def check_run(name: str, res: dict, agreement: float) -> None:
    """A method either changes D_f (agreement with M below 99%) or carries the warning its numbers call for."""
    m, found = res["metrics"], set(kinds(res))
    assert m["original/gold_agreement_forget"] < 0.99, name  # retraining changes D_f: there is something to do
    assert None not in found, (name, res["warnings"])  # every message is tagged
    if name == "none":
        assert agreement == 1.0 and found <= set(report.runs.SETTING_WARNINGS)  # the baseline: exempt
        return
    assert (agreement >= 0.99) == (w.NO_EFFECT in found), (name, agreement, res["warnings"])
    below = any(m[f"unlearn/{s}_acc"] < m[f"gold/{s}_acc"] - 0.10 for s in ("retain", "test"))
    assert below == (w.DAMAGED in found), (name, res["warnings"])
    assert agreement < 0.99 or found - set(report.runs.SETTING_WARNINGS), name


def run_or_refuse(run_pipeline, data: list[str], name: str, refused: dict[str, str]) -> dict | None:
    """The run of ``name`` on a random request, else (it refused with a ConfigError) on a class-wise one; None, with
    the refusals recorded, when it refuses both (a method for other data or models)."""
    for request in ([], ["forget=class", "forget.classes=[3]"]):
        try:
            return run_pipeline(*data, f"unlearner={name}", *request, fast=False, out=f"sweep/{name}")
        except ConfigError as err:
            refused.setdefault(name, []).append(str(err))
    return None


@pytest.mark.slow
def test_every_unlearner_on_a_tensor_file_has_an_effect_or_a_warning(run_pipeline, tmp_path):
    """Standardised Gaussian features a small MLP partly memorises (gold changes D_f); default settings of every
    ``conf/unlearner`` method. With a few hundred samples many methods take a handful of steps and leave D_f as M
    had it: each such run says "no effect", and summary.md's warnings column shows it. A method that refuses the
    request or the data does so with a one-line ConfigError naming it: UNSIR refuses a random request and runs
    class-wise; the language-model methods refuse a classifier."""
    data = gaussian_file(tmp_path / "features.npz", separation=1.0)
    runs, refused, ran = tmp_path / "sweep", {}, []
    for name in UNLEARNERS:
        res = run_or_refuse(run_pipeline, data, name, refused)
        if res is not None:
            check_run(name, res, forget_agreement(runs / name))
            ran.append(name)
    assert all(m.startswith("unlearner=") and "\n" not in m for ms in refused.values() for m in ms), refused
    assert "unsir" in refused and "unsir" in ran and len(ran) >= 17, (ran, refused)
    summary = report.summarise([runs], tmp_path / "report")
    md = (tmp_path / "report" / "summary.md").read_text()
    methods = [row for row in summary.rows if not row.gold]
    assert len(methods) == len(ran)
    for row in methods:
        res = json.loads((row.runs[0].path / "results.json").read_text())
        cell = "; ".join(f"{k} (1/1)" for k in dict.fromkeys(map(report.runs.warning_kind, res["warnings"])))
        assert row.warning_text() == cell and (not cell or f"| {cell} |" in md)
    assert any(row.warned for row in methods) and (tmp_path / "report" / "forget_vs_acc.png").exists()


def test_a_language_model_that_kept_its_greedy_answers_on_d_f_had_no_effect(monkeypatch):
    from types import SimpleNamespace

    from mu_lightning.data.qa import QASamples

    answers = {"original": [[5], [6, 7], [8], [9]], "gold": [[9], [6], [8], [9]], "unlearn": [[5], [6, 7], [8], [9]]}
    monkeypatch.setattr(w, "model_metrics", lambda ctx, m: {"_forget_answers": answers[m]})
    ctx = SimpleNamespace(data=SimpleNamespace(samples=QASamples(x=torch.zeros(1, 1, 1), y=torch.zeros(1))))
    agree = w.forget_agreements(ctx)
    assert agree == {"n": 4, "unlearn": 1.0, "gold": 0.5}  # gold answers 2 of the 4 questions otherwise
    message = w.no_effect_warning(agree, {}, None, 0.99, "greedy answers")[0]
    assert message.startswith("no effect: M_u's greedy answers on D_f agree with M's on 100.00% of its 4 samples")
    answers["unlearn"] = [[9], [6, 7], [8], [9]]  # one answer changed: 75% agree
    assert w.no_effect_warning(w.forget_agreements(ctx), {}, None, 0.99, "greedy answers") == []


def test_a_language_models_recall_has_no_chance_level_only_the_gap_to_gold():
    m = {"original/retain_acc": 1.0, "gold/retain_acc": 1.0, "unlearn/retain_acc": 0.2}
    assert [x.split(" is ")[1][:6] for x in w.accuracy_warnings(m, None)] == ["0.8000"]  # below gold, not "at chance"
    assert "at chance" in w.accuracy_warnings(m, 4)[0]  # the same numbers as a 4-class classifier's accuracy
