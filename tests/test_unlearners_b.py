"""SCRUB, Bad Teacher, SSD, UNSIR, Amnesiac, CF-k and EU-k on digits with the MLP and their yaml defaults.

Class-wise (digit 3) they must forget and keep the rest; on a random 10% request they must run finite and change
the model. The original model is trained once per session (shared stage cache).
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.batches import PhasedBatches, TensorBatches
from mu_lightning.data.forget import by_class
from mu_lightning.data.sources import synthetic
from mu_lightning.errors import ConfigError
from mu_lightning.models import CNN, MLP, ResNet18
from mu_lightning.unlearners import SCRUB, Amnesiac, CFk, EUk
from mu_lightning.unlearners.cf_k import blocks

DIGITS = ("dataset=digits", "logger=none", "callbacks.forget_retain=null")
CLASS_3 = ("forget=class", "forget.classes=[3]")

# Forget ceiling: "toward gold" (gold scores 0 on the class) is at most 10% of the ~135 forgotten images still
# recognised, against the original's > 95%. Bad Teacher's target on D_f is a random network's output, so the class
# keeps about chance accuracy (1 in 10) rather than 0: its ceiling is 20%.
# Retain tolerance: how far below the original's retain accuracy (0.992) a method may end: about twice the drop
# measured with these defaults and at least 2 points (23 of the 1,165 retain images), so a real utility loss fails.
CLASS_CASES = [  # (config, extra overrides, forget ceiling, retain tolerance); measured retain acc in the comment
    ("scrub", (), 0.10, 0.03),  # 0.984
    ("scrub", ("unlearner.rewind=true",), 0.10, 0.08),  # 0.921: rewinds to an earlier epoch, fewer min steps
    ("bad_teacher", (), 0.20, 0.03),  # 0.980
    ("ssd", (), 0.10, 0.03),  # 0.980
    ("ssd", ("unlearner.label_free=true", "unlearner.selection_weighting=5"), 0.10, 0.06),  # LFSSD, 0.957
    ("unsir", (), 0.10, 0.03),  # 0.980
    ("amnesiac", (), 0.10, 0.03),  # 0.980
    # 380 steps each (20 epochs, EU-k's gold recipe): the slow tier
    pytest.param("cf_k", (), 0.10, 0.02, marks=pytest.mark.slow),  # 0.999
    pytest.param("eu_k", (), 0.10, 0.02, marks=pytest.mark.slow),  # 0.992
]


def case_id(case) -> str:
    name, extra = getattr(case, "values", case)[:2]
    return name + (f"-{extra[0]}" if extra else "")


@pytest.mark.parametrize(("name", "extra", "ceiling", "tolerance"), CLASS_CASES, ids=map(case_id, CLASS_CASES))
def test_class_forgetting_forgets_and_keeps_the_rest(run_pipeline, name, extra, ceiling, tolerance):
    m = run_pipeline(*DIGITS, *CLASS_3, f"unlearner={name}", *extra, fast=False, shared_cache=True)["metrics"]
    # the original knows the class and gold, never trained on it, never predicts it: the gap to close
    assert m["original/forget_acc"] > 0.95 and m["gold/forget_acc"] < 0.02
    assert m["unlearn/forget_acc"] <= ceiling
    assert m["unlearn/retain_acc"] >= m["original/retain_acc"] - tolerance


# SSD's class-wise default (alpha 150) selects no weight at all for a random 10% request (0 of 17,226 measured): D_f
# is no more important to any weight than D is. The paper's alpha 10 dampens 5 weights, so the test runs that.
RANDOM_CASES = [("scrub", ()), ("bad_teacher", ()), ("ssd", ("unlearner.selection_weighting=10",)), ("amnesiac", ()),
                pytest.param("cf_k", (), marks=pytest.mark.slow), pytest.param("eu_k", (), marks=pytest.mark.slow)]


@pytest.mark.parametrize(("name", "extra"), RANDOM_CASES, ids=map(case_id, RANDOM_CASES))
def test_random_forgetting_runs_finite_and_changes_the_model(run_pipeline, tmp_path, name, extra):
    res = run_pipeline(*DIGITS, f"unlearner={name}", *extra, fast=False, shared_cache=True)
    assert res["stages"]["unlearn"]["diverged"] is False
    assert all(math.isfinite(v) for v in res["metrics"].values() if isinstance(v, float))
    logits = torch.load(tmp_path / "run" / "logits.pt", weights_only=True)["logits"]
    assert torch.isfinite(logits["unlearn"]["forget"]).all()
    assert not torch.equal(logits["unlearn"]["forget"], logits["original"]["forget"])


def test_unsir_refuses_a_random_request(run_pipeline):
    with pytest.raises(ConfigError, match="unlearner=unsir forgets whole classes only"):
        run_pipeline(*DIGITS, "unlearner=unsir", fast=False, shared_cache=True)


@pytest.mark.slow  # two SCRUB runs
def test_scrub_rewind_moves_forget_error_toward_the_held_out_error(run_pipeline):
    """SCRUB+R returns the epoch whose forget error is closest to the final model's val error; the final model is
    one of the candidates, so the rewound model can only be as close or closer than plain SCRUB's."""
    plain = run_pipeline(*DIGITS, "unlearner=scrub", fast=False, shared_cache=True, out="plain")["metrics"]
    rewound = run_pipeline(*DIGITS, "unlearner=scrub", "unlearner.rewind=true", fast=False, shared_cache=True,
                           out="rewound")["metrics"]
    target = 1 - plain["unlearn/val_acc"]
    assert abs((1 - rewound["unlearn/forget_acc"]) - target) <= abs((1 - plain["unlearn/forget_acc"]) - target)


def test_blocks_group_each_norm_with_the_layer_before_it():
    assert [[type(m).__name__ for m in b] for b in blocks(CNN([1, 8, 8], 10))] == [
        ["Conv2d", "BatchNorm2d"], ["Conv2d", "BatchNorm2d"], ["Linear"]]
    assert [len(b) for b in blocks(MLP([1, 8, 8], 10))] == [1, 1, 1]
    resnet = ResNet18([3, 32, 32], 10, width=4)
    assert [b[0] for b in blocks(resnet)] == [resnet.stem, resnet.layer1, resnet.layer2, resnet.layer3,
                                             resnet.layer4, resnet.head]


def test_cf_k_trains_only_the_last_k_blocks_and_checks_k():
    model = MLP([1, 8, 8], 10)
    sgd = partial(torch.optim.SGD, lr=0.1)
    assert list(CFk(model, k=1, optimizer=sgd).trainable_parameters()) == list(model[-1].parameters())
    with pytest.raises(ConfigError, match=r"unlearner.k=4 is out of range: MLP has 3 blocks"):
        CFk(model, k=4, optimizer=sgd)


def test_eu_k_reinitialises_the_last_k_blocks_only():
    torch.manual_seed(0)
    model = MLP([1, 8, 8], 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    EUk(model, k=1, optimizer=partial(torch.optim.SGD, lr=0.1)).edit(None)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"5.weight", "5.bias"}  # the head: Flatten, Linear, ReLU, Linear, ReLU, *Linear*


def test_amnesiac_never_relabels_into_a_forgotten_class():
    data = UnlearningDataModule(source=partial(synthetic, num_samples=300), forget=partial(by_class, classes=[3]))
    data.setup()
    loader = Amnesiac(MLP([1, 8, 8], 10), optimizer=partial(torch.optim.SGD, lr=0.1)).loader(data, seed=0)
    labels = torch.cat([batch["mixed"][1] for batch in loader])
    assert len(labels) == len(data.ids["train"]) and not (labels == 3).any()


def test_scrub_epochs_run_a_max_pass_then_a_min_pass_until_msteps():
    sgd = partial(torch.optim.SGD, lr=0.1)
    scrub = SCRUB(MLP([1, 8, 8], 10), epochs=3, msteps=1, batch_size=16, optimizer=sgd)
    sets = {"forget": TensorBatches(torch.zeros(20, 1, 8, 8), torch.zeros(20), 16),  # 2 batches
            "retain": TensorBatches(torch.zeros(40, 1, 8, 8), torch.zeros(40), 16)}  # 3 batches
    epoch = [0]
    loader = PhasedBatches(sets, scrub.phases, scrub.epochs, epoch=lambda: epoch[0])
    assert len(loader) == 5  # the longest epoch: 2 forget + 3 retain batches
    assert [next(iter(b)) for b in loader] == ["forget"] * 2 + ["retain"] * 3
    epoch[0] = 1
    assert [next(iter(b)) for b in loader] == ["retain"] * 3
    with pytest.raises(ConfigError, match=r"unlearner.msteps=4 is out of range"):
        SCRUB(MLP([1, 8, 8], 10), epochs=3, msteps=4, optimizer=sgd)
