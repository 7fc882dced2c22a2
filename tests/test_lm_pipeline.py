"""Language models through the whole pipeline (docs/language-models.md): original, gold retrained from scratch on the
retained people, an LM unlearner, and the LM metrics beside gold's, at a smaller size than ``experiment=lm_demo``."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from mu_lightning.data.fictitious import ATTRIBUTES, fictitious_qa
from mu_lightning.data.qa import QA
from mu_lightning.metrics.lm import answer_of
from tests.test_procedures import undocumented

SMALL = ("experiment=lm_demo", "logger=none", "dataset.source.num_people=30")


def majority_guess_recall(forget_ids: list[int]) -> float:
    """The recall of answering each forgotten question with the most common answer to its attribute among the
    retained QAs: what a model that knows nothing about the forgotten people could do at best without luck."""
    s = fictitious_qa(seq_len=24, vocab_size=512, num_people=30)
    train = [i for i in range(len(s.y)) if s.split[i] == 0]
    forget = set(forget_ids)
    pools = [set(pool) for pool, *_ in ATTRIBUTES.values()]
    value = {i: next(s.vocab[t] for t in answer_of(s.x[i, QA]) if s.vocab[t] in pools[int(s.y[i])]) for i in train}
    common = {a: Counter(value[i] for i in train if i not in forget and s.y[i] == a).most_common(1)[0][0]
              for a in s.y.unique().tolist()}
    return sum(value[i] == common[int(s.y[i])] for i in forget) / len(forget)


def test_a_small_lm_run_writes_every_lm_metric_documented_and_finite(run_pipeline):
    res = run_pipeline(*SMALL, "train.epochs=2", "unlearner=lm_rmu", "unlearner.epochs=1", fast=False)
    m = res["metrics"]
    for model in ("original", "gold", "unlearn"):
        for key in ("forget_acc", "retain_acc", "test_acc", "forget_truth_ratio", "model_utility", "mia_loss_auc",
                    "mia_mink_auc", "mia_zlib_auc", "forget_rouge", "retain_prob"):
            assert math.isfinite(m[f"{model}/{key}"]), f"{model}/{key}"
    assert m["gold/forget_quality"] == 1.0 and not undocumented(m)
    assert res["stages"]["unlearn"]["method"] == "LMRMU" and res["stages"]["gold"]["samples"] == 108  # 27 × 4


@pytest.mark.slow  # two LM runs of about 320 training steps each for M and M_g
@pytest.mark.parametrize("method", ["lm_simnpo", "lm_idkdpo"])
def test_lm_unlearners_bring_forget_recall_to_gold_and_keep_retain_recall(run_pipeline, tmp_path, method):
    res = run_pipeline(*SMALL, f"unlearner={method}", fast=False, shared_cache=True)
    m = res["metrics"]
    forget_ids = [int(line) for line in (tmp_path / "run" / "forget_ids.txt").read_text().split()]
    assert m["original/forget_acc"] >= 0.8 and m["original/retain_acc"] >= 0.9
    assert m["gold/forget_acc"] <= majority_guess_recall(forget_ids)
    gap = m["original/forget_acc"] - m["gold/forget_acc"]
    assert m["unlearn/forget_acc"] - m["gold/forget_acc"] <= gap / 2  # at least half-way to gold
    assert m["unlearn/retain_acc"] >= m["gold/retain_acc"] - 0.10
    assert m["unlearn/forget_quality"] > m["original/forget_quality"]


def test_a_classifier_method_refuses_question_answer_data_before_training(run_pipeline, tmp_path):
    from mu_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="unlearner=Finetune unlearns classifiers"):
        run_pipeline(*SMALL, "unlearner=finetune", fast=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))


def test_rmu_refuses_a_layer_the_model_has_not():
    from mu_lightning.errors import ConfigError
    from mu_lightning.models import GPT
    from mu_lightning.unlearners import LMRMU

    with pytest.raises(ConfigError, match=r"unlearner.layer=3 is not a block of model=GPT \(1 to 2\)"):
        LMRMU.check_model(GPT(16, 8, layers=2, heads=2, width=8), 1, {"layer": 3})


@pytest.mark.slow  # a sweep of three LM unlearners in a subprocess, as a user starts it
def test_a_sweep_over_three_lm_unlearners_writes_the_summary_and_figures(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "sweep"
    subprocess.run([sys.executable, "train.py", "-m", *SMALL, "train.epochs=40", "unlearner=lm_npo,lm_simnpo,lm_idkdpo",
                    f"hydra.sweep.dir={out}", f"paths.cache_dir={tmp_path / 'cache'}", "extras.print_config=false"],
                   cwd=root, check=True, capture_output=True, timeout=900)
    md = (out / "summary.md").read_text()
    assert all(f"| {m} |" in md for m in ("gold", "lm_npo", "lm_simnpo", "lm_idkdpo"))
    assert "forget_truth_ratio" in md and "forget_quality" in md
    assert (out / "forget_vs_acc.png").stat().st_size > 0 and (out / "time.png").stat().st_size > 0


@pytest.mark.slow  # two more gold seeds and two more unlearning runs
def test_the_seeds_tier_gives_gold_a_forget_quality_floor_and_a_forget_score(run_pipeline):
    res = run_pipeline(*SMALL, "train.epochs=20", "metric=seeds", "metric.seeds=3", fast=False)
    m = res["metrics"]
    assert 0.0 <= m["gold/forget_quality"] <= 1.0 and m["unlearn/forget_score_models"] == 3.0
    assert 0.0 <= m["unlearn/forget_score"] <= 1.0 and not undocumented(m)
