"""Paper-faithful protocols (docs/fidelity.md): Boundary Shrink in pixel space, the class-wise test set, one-shot
work on the trainer's device, ZRF's samples and random model, and the warnings of a run that did nothing or broke."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.forget import by_class, random_sample
from mu_lightning.data.sources import Samples, standardise, synthetic
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import full
from mu_lightning.metrics.warnings import accuracy_warnings
from mu_lightning.models import CNN, MLP
from mu_lightning.unlearners import SSD, UNSIR, BoundaryShrink, Fisher, GradientAscent, Influence, SalUn


def cpu_trainer(epochs: int) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu")


def datamodule(forget, **kwargs) -> UnlearningDataModule:
    data = UnlearningDataModule(source=partial(synthetic, num_samples=300), forget=forget, **kwargs)
    data.setup()
    return data


# --- Boundary Shrink on standardised data --------------------------------------------------------------------------

def test_boundary_shrink_steps_clamps_and_rounds_in_pixel_space():
    """On standardised CIFAR-like data x' stays within eps of x in pixels, inside [0, 1], on the 1/255 grid, and is
    not clamped to 0 where a pixel lies below the channel mean (a clamp in standardised space zeroes ~half)."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (40, 3, 4, 4), generator=gen).float() / 255
    x = pixels.clone()
    stats = standardise(x, None)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in stats)
    torch.manual_seed(0)
    method = BoundaryShrink(CNN([3, 4, 4], 10), eps=0.1, epochs=1, optimizer=torch.optim.SGD)
    method.data = SimpleNamespace(samples=Samples(x=x, y=torch.zeros(40, dtype=torch.int64), pixel_stats=stats))
    seen = []
    method.frozen_original.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    method.neighbour_labels(x, torch.randint(0, 10, (40,), generator=gen))
    adv = seen[-1] * std + mean  # the neighbour the frozen M classified, back in pixels
    assert (adv - pixels).abs().max() <= 0.1 + 0.5 / 255 + 1e-5
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
    assert torch.allclose(adv * 255, (adv * 255).round(), atol=1e-3)
    assert (adv.abs() < 1e-6).float().mean() < 0.2  # pixels at 0 only where x − eps reaches it


def test_boundary_shrink_without_pixel_stats_takes_the_inputs_as_pixels():
    method = BoundaryShrink(MLP([1, 2, 2], 3), eps=0.25, input_range=None, epochs=1, optimizer=torch.optim.SGD)
    method.data = SimpleNamespace(samples=SimpleNamespace(pixel_stats=None))
    x = torch.tensor([[[[0.5, 2.0], [-1.0, 0.0]]]])
    assert torch.equal(method.neighbour(x, torch.ones_like(x)), x + 0.25)


def test_standardised_readers_record_their_pixel_stats():
    x = torch.tensor([[[[0.0, 1.0]]], [[[0.5, 0.5]]]])
    mean, std = standardise(x, None)
    assert mean == pytest.approx((0.5,)) and std == pytest.approx((float(torch.tensor([0.0, 1, 0.5, 0.5]).std()),))


# --- class-wise test set -------------------------------------------------------------------------------------------

def test_classwise_test_drop_leaves_the_forgotten_class_out_of_d_test():
    keep = datamodule(partial(by_class, classes=[3]))
    drop = datamodule(partial(by_class, classes=[3]), classwise_test="drop")
    y = keep.samples.y
    assert (y[keep.ids["test"]] == 3).any() and not (y[drop.ids["test"]] == 3).any()
    assert drop.ids["test"].tolist() == [i for i in keep.ids["test"].tolist() if y[i] != 3]
    assert drop.dropped_test_classes() == [3] and keep.dropped_test_classes() == []
    random = datamodule(partial(random_sample, fraction=0.1), classwise_test="drop")
    assert random.dropped_test_classes() == [] and len(random.ids["test"]) == len(keep.ids["test"])


def test_classwise_test_rejects_other_values():
    with pytest.raises(ConfigError, match="metric.classwise_test='all'"):
        UnlearningDataModule(source=synthetic, forget=random_sample, classwise_test="all")


# --- one-shot work where the trainer trains ------------------------------------------------------------------------

class Stop(Exception):
    """Raised by the forward hook once the device of the first input is known."""


def first_input_device(method, data) -> torch.device:
    """Run ``method.unlearn`` with a trainer on the meta device (no GPU here) until the model's first forward pass;
    the device its input had. (Moving the weights back off the meta device then fails: they hold no data.)"""
    seen = []

    def hook(module, args):
        seen.append(args[0].device)
        raise Stop

    method.model.register_forward_pre_hook(hook)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    with pytest.raises((Stop, NotImplementedError)):
        method.unlearn(data, lambda epochs: trainer, seed=0)
    return seen[0]


@pytest.mark.parametrize("make, forget", [
    (lambda m: Fisher(m), partial(random_sample, fraction=0.1)),
    (lambda m: Influence(m, num_samples=8), partial(random_sample, fraction=0.1)),
    (lambda m: SSD(m), partial(random_sample, fraction=0.1)),
    (lambda m: SalUn(m, epochs=1, optimizer=torch.optim.SGD), partial(random_sample, fraction=0.1)),
    (lambda m: UNSIR(m, noise_batch_size=2, optimizer=torch.optim.SGD), partial(by_class, classes=[3])),
], ids=["fisher", "influence", "ssd", "salun_mask", "unsir_noise"])
def test_one_shot_work_runs_on_the_trainers_device(make, forget):
    assert first_input_device(make(MLP([1, 8, 8], 10, hidden=[8])), datamodule(forget)) == torch.device("meta")


# --- ZRF --------------------------------------------------------------------------------------------------------------

def zrf_ctx(data, on="forget", compat=False, models=()):
    cfg = SimpleNamespace(zrf=SimpleNamespace(on=on, compat=compat, seed=5, get=lambda k, d=None: on))
    return SimpleNamespace(cfg=cfg, data=data, models=dict.fromkeys(models), labels=lambda s: data.tensors(s)[1],
                           add_model=lambda name, m: name, fresh_model=lambda seed: None)


def test_zrf_heldout_uses_the_val_samples_of_the_forgotten_class():
    data = datamodule(partial(by_class, classes=[3]))
    split, rows = full.zrf_samples(zrf_ctx(data, on="heldout"))
    yv = data.tensors("val")[1]
    assert split == "val" and rows.tolist() == (yv == 3).tolist() and rows.sum() > 0
    assert full.zrf_samples(zrf_ctx(data)) == ("forget", slice(None))
    random = datamodule(partial(random_sample, fraction=0.1))
    assert full.zrf_samples(zrf_ctx(random, on="heldout")) == ("forget", slice(None))


def test_zrf_compat_scores_against_bad_teachers_incompetent_teacher():
    data = datamodule(partial(random_sample, fraction=0.1))
    assert full.zrf_reference(zrf_ctx(data, compat=True, models=[full.INCOMPETENT])) == full.INCOMPETENT
    assert full.zrf_reference(zrf_ctx(data, compat=False, models=[full.INCOMPETENT])) == full.RANDOM_INIT


# --- warnings -------------------------------------------------------------------------------------------------------

def test_accuracy_at_chance_warns_only_where_m_was_above_it():
    metrics = {"original/retain_acc": 0.98, "unlearn/retain_acc": 0.12, "original/test_acc": 0.11,
               "unlearn/test_acc": 0.10}
    warned = accuracy_warnings(metrics, 10)
    assert len(warned) == 1 and "retain accuracy 0.1200 is at chance" in warned[0]
    assert accuracy_warnings({**metrics, "unlearn/retain_acc": 0.16}, 10) == []


def test_a_loss_that_explodes_without_diverging_is_a_warning():
    torch.manual_seed(0)
    method = GradientAscent(MLP([1, 8, 8], 10, hidden=[16]), epochs=3, batch_size=8,
                            optimizer=partial(torch.optim.SGD, lr=1.0))
    method.unlearn(datamodule(partial(random_sample, fraction=0.2)), cpu_trainer, seed=0)
    assert not method.diverged
    assert len(method.warnings) == 1 and "loss exploded" in method.warnings[0]
    calm = GradientAscent(MLP([1, 8, 8], 10, hidden=[16]), epochs=1, optimizer=partial(torch.optim.SGD, lr=1e-4))
    calm.unlearn(datamodule(partial(random_sample, fraction=0.2)), cpu_trainer, seed=0)
    assert calm.warnings == []


def test_results_record_the_dropped_class_and_an_unchanged_model(run_pipeline):
    """SSD that selects no weight leaves M_u = M: a warning in results.json; the class-wise test set is recorded."""
    res = run_pipeline("forget=class", "forget.classes=[3]", "metric.classwise_test=drop", "unlearner=ssd",
                       "unlearner.selection_weighting=1e12", shared_cache=True)
    assert res["dropped_test_classes"] == [3]
    assert any("changed no weight" in w for w in res["warnings"])
    assert res["metrics"]["unlearn/forget_acc"] == res["metrics"]["original/forget_acc"]


# --- the reproduction command --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_reproduce_runs_both_protocols_end_to_end_on_a_tiny_cifar_archive(tmp_path, capsys):
    """scripts/reproduce.py on 100 CIFAR-format images (the official archive layout), on the CPU with a small CNN in
    ResNet-18's place and one training epoch: every (protocol, method) row, a Retrain row per protocol, and the
    published Retrain values beside ours."""
    import importlib.util

    from tests.test_datasets import write_cifar10

    write_cifar10(tmp_path / "data", per_batch=20, n_test=20)
    spec = importlib.util.spec_from_file_location("reproduce", "scripts/reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    text = reproduce.main(["--out", str(tmp_path / "out"), f"dataset.data_dir={tmp_path / 'data'}", "trainer=cpu",
                           "model=cnn", "train.epochs=1", "train.batch_size=32", "logger=none",
                           "callbacks.forget_retain=null"])
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (p, m) for p in ("random10", "class") for m in ("Retrain", *reproduce.METHODS)]
    retrain = next(r for r in rows if r[0].strip() == "random10" and r[1].strip() == "Retrain")
    assert [c.strip() for c in retrain[6:]] == ["5.24", "100.00", "94.26", "12.88"]
    res = json.loads((tmp_path / "out" / "class" / "ssd" / "results.json").read_text())
    assert res["dropped_test_classes"] == [0]  # the class-wise preset drops class 0 from D_test
    assert all(0 <= float(c) <= 100 for r in rows for c in r[2:6])
    assert text in capsys.readouterr().out
