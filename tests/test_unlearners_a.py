"""NegGrad+, RL, ℓ1-sparse, Fisher, IU, Boundary Shrink/Expand and SalUn(-soft) unlearn with their shipped defaults.

Every pipeline test runs on digits with the configs' own defaults (``fast=False``), so it checks exactly what
``python train.py unlearner=<name> forget=class forget.classes=[3]`` does; the original and gold models come from the
session-wide stage cache. On digits with forget class 3 the original scores ≈ 0.99 on D_f and D_r, and the gold model
0.0 on D_f (it never saw a 3, so it never predicts one).
"""

from __future__ import annotations

import math

import pytest
import torch

from mu_lightning.data.batches import SequentialBatches, TensorBatches
from mu_lightning.errors import ConfigError
from mu_lightning.models import MLP
from mu_lightning.unlearners import L1Sparse, SalUn

DIGITS = ["dataset=digits", "logger=none"]
CLASS_3 = ["forget=class", "forget.classes=[3]"]

# Forget accuracy must end at most 0.10 (original ≈ 0.99, gold 0.0): at most one forget sample in ten still read as
# a 3 is "well below the original, toward gold". Retain tolerance = how far below the original's retain accuracy
# M_u may end. 0.05 for methods that train on D_r (its gradients keep utility; they end 0.01-0.03 below). Methods with
# no retain term, or a one-shot step, lose more: IU 0.03, NegGrad+ 0.035 (the unbounded ascent term), Boundary Shrink
# 0.08 and Boundary Expand 0.115 (D_f-only fine-tunes, the weakest utility in SalUn Table 1 too) measured on digits;
# their tolerances leave ~0.03 of margin over that and still fail a collapse (a broken method falls below 0.6).
CLASSWISE = {
    "neggrad_plus": 0.07,
    "random_label": 0.05,
    "l1_sparse": 0.05,
    "fisher": 0.05,
    "influence": 0.07,
    "boundary_shrink": 0.12,
    "boundary_expand": 0.15,
    "salun": 0.05,
    "salun unlearner.soft=true": 0.05,
}


@pytest.mark.parametrize("method", list(CLASSWISE))
def test_classwise_forgetting_reaches_gold_and_keeps_retain(run_pipeline, method):
    name, *extra = method.split()
    res = run_pipeline(*DIGITS, *CLASS_3, f"unlearner={name}", *extra, fast=False, shared_cache=True)
    m = res["metrics"]
    assert m["original/forget_acc"] > 0.95 and m["gold/forget_acc"] == 0.0  # the premise the thresholds rest on
    assert m["unlearn/forget_acc"] <= 0.10
    assert m["unlearn/retain_acc"] >= m["original/retain_acc"] - CLASSWISE[method]
    assert res["stages"]["unlearn"]["diverged"] is False


# One training epoch is enough to show a method runs and moves the weights; one-shot methods have no epochs.
RANDOM = {
    "neggrad_plus": ["unlearner.epochs=1"],
    "random_label": ["unlearner.epochs=1"],
    "l1_sparse": ["unlearner.epochs=1"],
    "fisher": [],
    "influence": [],
    "boundary_shrink": ["unlearner.epochs=1"],
    "boundary_expand": ["unlearner.epochs=1"],
    "salun": ["unlearner.epochs=1"],
    "salun_soft": ["unlearner.epochs=1", "unlearner.soft=true"],
}


@pytest.mark.parametrize("method", list(RANDOM))
def test_random_forgetting_runs_finite_and_changes_the_model(run_pipeline, tmp_path, method):
    name = "salun" if method == "salun_soft" else method
    res = run_pipeline(*DIGITS, f"unlearner={name}", *RANDOM[method], fast=False, shared_cache=True)
    assert res["stages"]["unlearn"]["diverged"] is False
    assert all(math.isfinite(v) for v in res["metrics"].values() if isinstance(v, float))
    logits = torch.load(tmp_path / "run" / "logits.pt", weights_only=True)["logits"]
    for split in ("forget", "retain"):
        after, before = logits["unlearn"][split], logits["original"][split]
        assert torch.isfinite(after).all()
        assert not torch.allclose(after, before, atol=1e-4)


def test_sequential_batches_pass_over_each_set_in_turn():
    x = torch.arange(8.0).view(8, 1)
    sets = {"forget": TensorBatches(x[:3], torch.zeros(3), 2), "retain": TensorBatches(x[3:], torch.ones(5), 2)}
    steps = list(SequentialBatches(sets))
    assert len(SequentialBatches(sets)) == 5 == len(steps)  # ceil(3/2) + ceil(5/2)
    assert [next(iter(s)) for s in steps] == ["forget"] * 2 + ["retain"] * 3
    assert torch.cat([s["retain"][0] for s in steps[2:]]).flatten().tolist() == [3, 4, 5, 6, 7]


def test_l1_coefficient_decays_linearly_then_stops():
    # γ = 1e-3, E = 5, no_l1_epochs = 1: γ·(1 − t/4) for t = 0..3, then 0 (Unlearn-Sparse FT_l1)
    method = L1Sparse(MLP([1, 2, 2], 3), gamma=1e-3, no_l1_epochs=1, epochs=5, optimizer=torch.optim.SGD)
    assert [method.l1_coefficient(t) for t in range(5)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0])
    with pytest.raises(ConfigError, match="no_l1_epochs=5"):
        L1Sparse(MLP([1, 2, 2], 3), no_l1_epochs=5, epochs=5, optimizer=torch.optim.SGD)


def test_salun_rejects_a_mask_ratio_outside_0_1():
    with pytest.raises(ConfigError, match="mask_ratio=0"):
        SalUn(MLP([1, 2, 2], 3), mask_ratio=0, epochs=1, optimizer=torch.optim.SGD)


def _unlearn_directly(method, forget):
    """Run ``method`` outside the pipeline on 300 synthetic samples, so the test can read the weights afterwards."""
    import functools

    import lightning as L

    from mu_lightning.data import UnlearningDataModule
    from mu_lightning.data.sources import synthetic

    data = UnlearningDataModule(source=functools.partial(synthetic, num_samples=300), forget=forget)
    data.setup()
    method.unlearn(data, lambda epochs: L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu"), seed=0)
    return data


def test_salun_moves_only_the_masked_weights():
    from mu_lightning.data.forget import random_sample

    torch.manual_seed(0)
    model = MLP([1, 8, 8], 10, hidden=[16])
    before = [p.detach().clone() for p in model.parameters()]
    method = SalUn(model, mask_ratio=0.25, epochs=1, batch_size=32,
                   optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4))
    _unlearn_directly(method, random_sample)
    mask = torch.cat([m.flatten() for m in method.masks])
    assert mask.sum().item() == pytest.approx(0.25 * mask.numel(), abs=2)  # top 25% by saliency (ties aside)
    moved = torch.cat([(p.detach() != p0).flatten() for p, p0 in zip(model.parameters(), before, strict=True)])
    assert not moved[mask == 0].any()  # weight decay and momentum never leak outside the mask
    assert moved[mask == 1].float().mean() > 0.9


@pytest.mark.parametrize("soft", [False, True])
def test_salun_works_per_step_whatever_the_chunk(soft):
    """The mask's pull-back and SalUn-soft's schedule act after every optimizer step, also when a Lightning batch is a
    chunk of 8 steps (no trajectory callback), so both give the weights of one step per batch."""
    from mu_lightning.data.forget import random_sample

    weights = []
    for steps_per_batch in (1, 8):
        torch.manual_seed(0)
        model = MLP([1, 8, 8], 10, hidden=[16])
        method = SalUn(model, mask_ratio=0.25, soft=soft, epochs=2, batch_size=32,
                       optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4))
        method.steps_per_batch = steps_per_batch
        _unlearn_directly(method, random_sample)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_boundary_expand_keeps_the_head_width():
    from mu_lightning.data.forget import by_class
    from mu_lightning.unlearners import BoundaryExpand

    model = MLP([1, 8, 8], 10, hidden=[16])
    method = BoundaryExpand(model, epochs=1, batch_size=32, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    _unlearn_directly(method, lambda ids, y: by_class(ids, y, classes=[3]))
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)  # the shadow neuron is dropped
    assert method.shadow.weight.grad is not None  # and it was trained alongside the model


def test_neggrad_plus_rejects_an_alpha_outside_0_1():
    from mu_lightning.unlearners import NegGradPlus

    with pytest.raises(ConfigError, match="alpha=1.5"):
        NegGradPlus(MLP([1, 2, 2], 3), alpha=1.5, epochs=1, optimizer=torch.optim.SGD)
