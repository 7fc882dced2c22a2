"""Training-set manipulations (poison=badnets/interclass/none), forget=poisoned, and the corrective metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from mu_lightning.data.poison import BadNets, InterClass, NoPoison, stamp
from mu_lightning.data.poisoned import identified_poison
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import corrective as cm

CONF = Path(__file__).resolve().parents[1] / "conf"


def toy(n: int = 200, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random 1×8×8 inputs in [0, 0.5], labels cycling through the classes, and half the ids (the first ``classes``
    of every ``2 * classes``) as the training split: n / (2 * classes) training samples per class."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen) * 0.5
    y = torch.arange(n) % classes
    return x, y, torch.arange(n)[(torch.arange(n) // classes) % 2 == 0]


# ---- BadNets ----------------------------------------------------------------------------------------------------

def test_badnets_stamps_the_trigger_exactly_on_the_chosen_ids_and_nowhere_else():
    x, y, train = toy()
    x0, y0 = x.clone(), y.clone()
    bn = BadNets(share=0.1, target_class=0, patch_size=2, value=0.9, seed=3)
    px, py, ids = bn(x, y, train)
    assert torch.equal(x, x0) and torch.equal(y, y0)  # inputs untouched
    assert len(ids) == round(0.1 * len(train)) and torch.equal(ids, ids.sort().values)
    assert torch.isin(ids, train).all() and (y[ids] != 0).all()  # training samples of other classes only
    patch = torch.zeros(8, 8, dtype=torch.bool)
    patch[6:, 6:] = True  # bottom-right 2×2
    changed = px != x  # [N, 1, 8, 8]
    assert torch.equal(changed.flatten(1).any(1).nonzero().flatten(), ids)  # only the chosen samples change
    assert not changed[:, :, ~patch].any()  # and only inside the patch
    assert (px[ids][:, :, patch] == 0.9).all()  # where the trigger is exactly the value
    others = torch.ones(len(y), dtype=torch.bool)
    others[ids] = False
    assert torch.equal(px[others], x[others])
    assert (py[ids] == 0).all() and torch.equal(py[others], y[others])  # relabelled to the target class, only them


@pytest.mark.parametrize(("position", "rows", "cols"), [
    ("bottom-right", slice(5, 8), slice(5, 8)), ("top-left", slice(0, 3), slice(0, 3)),
    ("top-right", slice(0, 3), slice(5, 8)), ("bottom-left", slice(5, 8), slice(0, 3)),
    ("center", slice(2, 5), slice(2, 5)), ([1, 4], slice(1, 4), slice(4, 7)),
])
def test_stamp_positions(position, rows, cols):
    img = torch.zeros(2, 8, 8)  # one image, two channels
    out = stamp(img, 3, position, 1.5)
    want = torch.zeros(2, 8, 8)
    want[:, rows, cols] = 1.5
    assert torch.equal(out, want) and not img.any()


def test_badnets_value_defaults_to_the_largest_training_input_and_trigger_uses_it():
    x, y, train = toy()
    x[10, 0, 0, 0] = 7.0  # a sample outside the training split: not part of the training inputs' range
    x[4, 0, 3, 3] = 2.5
    bn = BadNets(count=5, patch_size=2)
    with pytest.raises(RuntimeError, match="apply the manipulation first"):
        bn.trigger(x[:1])
    px, _, ids = bn(x, y, train)
    assert bn.value_used == 2.5
    assert (px[ids, :, 6:, 6:] == 2.5).all()
    t = bn.trigger(x[10:12])
    assert (t[:, :, 6:, 6:] == 2.5).all() and torch.equal(t[:, :, :6], x[10:12, :, :6])


def test_badnets_include_target_draws_from_every_class():
    x, y, train = toy()
    _, py, ids = BadNets(share=1.0, include_target=True, patch_size=1, value=1.0)(x, y, train)
    assert torch.equal(ids, train) and (py[train] == 0).all()
    with pytest.raises(ConfigError, match="more than the 90 training samples not of class 0"):
        BadNets(share=1.0, patch_size=1)(x, y, train)


def test_badnets_is_seeded_and_deterministic():
    x, y, train = toy()
    a = BadNets(share=0.2, seed=1, patch_size=2)(x, y, train)
    b = BadNets(share=0.2, seed=1, patch_size=2)(x, y, train)
    c = BadNets(share=0.2, seed=2, patch_size=2)(x, y, train)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.ids, c.ids)
    assert len(BadNets(count=7, patch_size=2)(x, y, train).ids) == 7
    assert len(BadNets(count=7, patch_size=2)(x, y).ids) == 7  # train_ids=None: every sample is a training sample


def test_none_is_the_identity():
    x, y, train = toy()
    px, py, ids = NoPoison()(x, y, train)
    assert px is x and py is y and ids.dtype == torch.int64 and len(ids) == 0
    assert NoPoison().fingerprint() == {}


def test_fingerprints_name_every_setting():
    a, b = BadNets(share=0.05, patch_size=2), BadNets(share=0.05, patch_size=3)
    assert a.fingerprint() != b.fingerprint() and a.fingerprint()["poison"] == "badnets"
    assert InterClass(classes=[3, 5]).fingerprint() != InterClass(classes=[3, 8]).fingerprint()
    for p in (a, InterClass(), BadNets(position=[0, 1])):
        assert json.loads(json.dumps(p.fingerprint())) == p.fingerprint()  # JSON-able as is


# ---- Interclass confusion -----------------------------------------------------------------------------------------

def test_interclass_swaps_exactly_the_chosen_share_of_the_two_classes():
    x, y, train = toy(n=400)  # 20 training samples per class
    ic = InterClass(classes=[3, 5], share=0.25, seed=0)
    px, py, ids = ic(x, y, train)
    assert px is x  # inputs untouched
    assert torch.isin(ids, train).all() and torch.equal(ids, ids.sort().values)
    assert (y[ids] == 3).sum() == 5 and (y[ids] == 5).sum() == 5  # 25% of each class's 20
    assert (py[ids][y[ids] == 3] == 5).all() and (py[ids][y[ids] == 5] == 3).all()
    others = torch.ones(len(y), dtype=torch.bool)
    others[ids] = False
    assert torch.equal(py[others], y[others])
    again = InterClass(classes=[3, 5], share=0.25, seed=0)(x, y, train)
    assert torch.equal(again.ids, ids) and not torch.equal(InterClass(classes=[3, 5], seed=1)(x, y, train).ids, ids)
    by_count = InterClass(classes=[3, 5], count=8)(x, y, train)
    assert (y[by_count.ids] == 3).sum() == 4 and (y[by_count.ids] == 5).sum() == 4


# ---- Bad settings -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("make", "message"), [
    (lambda: BadNets(share=0), r"poison.share=0 is out of range: it must be > 0 and <= 1"),
    (lambda: BadNets(share=1.5), r"poison.share=1.5 is out of range: it must be > 0 and <= 1"),
    (lambda: BadNets(share=-0.1), r"poison.share=-0.1 is out of range"),
    (lambda: BadNets(count=0), r"poison.count=0 is not allowed: it must be a positive integer"),
    (lambda: BadNets(patch_size=0), r"poison.patch_size=0 is not allowed"),
    (lambda: BadNets(position="middle"), r"poison.position='middle' is not allowed: use one of bottom-right"),
    (lambda: BadNets(position=[1]), r"poison.position must be one of .* or \[row, col\]"),
    (lambda: BadNets(value=float("nan")), r"poison.value=nan is not allowed: it must be a finite number"),
    (lambda: BadNets(target_class=-1), r"poison.target_class=-1 is not allowed"),
    (lambda: BadNets(seed="a"), r"poison.seed='a' is not allowed"),
    (lambda: InterClass(classes=[3, 3]), r"poison.classes=\[3, 3\]: the two classes must differ"),
    (lambda: InterClass(classes=[3]), r"poison.classes=\[3\] is not allowed: it must be two class ids"),
    (lambda: InterClass(share=2), r"poison.share=2 is out of range"),
    (lambda: InterClass(count=7), r"poison.count=7 is odd"),
])
def test_bad_settings_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize(("poison", "message"), [
    (BadNets(target_class=10), r"poison.target_class=10 is out of range: the dataset has 10 classes \(0 to 9\)"),
    (BadNets(patch_size=9), r"poison.patch_size=9 is larger than the images \(8×8\): it must be at most 8"),
    (BadNets(patch_size=3, position=[6, 0]), r"poison.position=\[6, 0\]: a 3×3 patch there leaves the 8×8 image"),
    (BadNets(count=91), r"poison.count=91 is more than the 90 training samples not of class 0"),
    (BadNets(share=0.001), r"manipulates no sample: choose a larger share"),
    (InterClass(classes=[3, 10]), r"poison.classes=\[3, 10\] is out of range: the dataset has 10 classes"),
    (InterClass(count=22), r"poison.count=22 needs 11 training samples of class 3, which has 10"),
    (InterClass(share=0.01), r"relabels no sample of class 3"),
])
def test_bad_settings_for_the_data_are_config_errors(poison, message):
    x, y, train = toy()  # 10 training samples per class, 8×8 images
    with pytest.raises(ConfigError, match=message):
        poison(x, y, train)


FEATURES = r"poison=badnets stamps a square patch on images.*samples have shape \[20\] \(dataset.input_shape\)"


def test_badnets_refuses_feature_vectors_and_stamps_images_without_a_channel():
    """1-D samples have no H×W for a patch: one ConfigError line naming their shape and what badnets needs (not an
    IndexError, nor a patch stamped across N samples); [N, H, W] images without a channel axis are stamped."""
    x, y = torch.rand(40, 20), torch.arange(40) % 4
    with pytest.raises(ConfigError, match=FEATURES) as raised:
        BadNets(share=0.1)(x, y)
    assert "\n" not in str(raised.value) and "[C, H, W] or [H, W]" in str(raised.value)
    with pytest.raises(ConfigError, match=FEATURES):
        BadNets().check_fits(4, (20,))  # what the pipeline checks from dataset.input_shape before loading the data
    px, _, ids = BadNets(share=0.1, patch_size=2, value=5.0)(torch.zeros(40, 8, 8), y)
    assert (px[ids, 6:, 6:] == 5.0).all() and px.sum() == 5.0 * 4 * len(ids)


def test_badnets_on_a_tensor_file_of_features_stops_before_training(tmp_path):
    from mu_lightning.pipeline import run
    from tests.helpers import compose_cfg

    torch.save({"x": torch.randn(300, 20), "y": torch.arange(300) % 3}, tmp_path / "features.pt")
    cfg = compose_cfg(tmp_path, ["dataset=tensor_file", f"dataset.path={tmp_path / 'features.pt'}",
                                 "dataset.input_shape=[20]", "dataset.num_classes=3", "poison=badnets",
                                 "forget=poisoned"], fast=False)
    with pytest.raises(ConfigError, match=FEATURES) as raised:
        run(cfg)
    assert "\n" not in str(raised.value) and not (tmp_path / "run" / "results.json").exists()


# ---- forget=poisoned ----------------------------------------------------------------------------------------------

def test_poisoned_request_takes_a_seeded_share_of_the_manipulated_samples():
    x, y, train = toy()
    ids = BadNets(count=40, patch_size=2)(x, y, train).ids
    forget = identified_poison(train, y[train], poison_ids=ids, identified=0.25, seed=0)
    assert len(forget) == 10 and torch.isin(forget, ids).all() and torch.equal(forget, forget.sort().values)
    assert torch.equal(forget, identified_poison(train, y[train], poison_ids=ids, identified=0.25, seed=0))
    assert not torch.equal(forget, identified_poison(train, y[train], poison_ids=ids, identified=0.25, seed=1))
    assert torch.equal(identified_poison(train, y[train], poison_ids=ids, identified=1.0), ids)
    assert len(identified_poison(train, y[train], poison_ids=ids, count=3)) == 3
    remaining = train[~torch.isin(train, forget)]  # a later request in a sequence sees only what is left
    later = identified_poison(remaining, y[remaining], poison_ids=ids, identified=1.0)
    assert torch.equal(later, ids[~torch.isin(ids, forget)])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, r"forget=poisoned needs a poison=\.\.\. manipulation"),
    ({"poison_ids": torch.empty(0, dtype=torch.int64)}, r"forget=poisoned needs a poison=\.\.\. manipulation"),
    ({"poison_ids": torch.arange(10), "identified": 0}, r"forget.identified=0 is out of range: it must be > 0"),
    ({"poison_ids": torch.arange(10), "identified": 1.5}, r"forget.identified=1.5 is out of range"),
    ({"poison_ids": torch.arange(10), "identified": 0.01}, r"identifies 0 of the 10 manipulated samples"),
    ({"poison_ids": torch.arange(10), "count": 11}, r"forget.count=11 is out of range: .* 0 < count <= 10"),
])
def test_poisoned_request_errors(kwargs, message):
    train = torch.arange(100)
    with pytest.raises(ConfigError, match=message):
        identified_poison(train, torch.zeros(100, dtype=torch.int64), **kwargs)


# ---- Config files -------------------------------------------------------------------------------------------------

def test_config_files_build_the_manipulations_and_the_request():
    assert isinstance(instantiate(OmegaConf.load(CONF / "poison" / "none.yaml")), NoPoison)
    bn = instantiate(OmegaConf.load(CONF / "poison" / "badnets.yaml"))
    assert isinstance(bn, BadNets) and bn.patch_size == 2 and bn.target_class == 0 and bn.value is None
    ic = instantiate(OmegaConf.load(CONF / "poison" / "interclass.yaml"))
    assert isinstance(ic, InterClass) and ic.classes == (3, 5)
    x, y, train = toy(n=400)
    for p in (bn, ic):
        assert len(p(x, y, train).ids) > 0  # the defaults work on 10 classes of 8×8 images
    request = instantiate(OmegaConf.load(CONF / "forget" / "poisoned.yaml"))
    ids = bn(x, y, train).ids
    assert torch.equal(request(train, y[train], poison_ids=ids), ids)  # identified: 1.0 by default
    with pytest.raises(ConfigError, match="needs a poison"):
        request(train, y[train])  # what a datamodule that does not pass poison_ids gets


# ---- Metrics ------------------------------------------------------------------------------------------------------

def onehot(pred: list[int], classes: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(pred), classes).float()


def test_badnets_metrics_against_hand_computed_values():
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    clean = onehot([0, 1, 2, 0, 1, 1])  # on the non-target samples (1, 2, 3, 1, 2): 1, 2, 1 right -> 3/5
    triggered = onehot([0, 0, 2, 0, 0, 1])  # non-target predicted 0: ids 1, 3, 4 -> 3/5; right: id 2 -> 1/5
    out = cm.badnets_metrics(clean, triggered, y, target_class=0)
    assert out == pytest.approx({"backdoor_asr": 0.6, "backdoor_clean_acc": 0.6, "backdoor_triggered_acc": 0.2})
    assert cm.attack_success_rate(triggered, y, 0) == pytest.approx(0.6)
    assert math.isnan(cm.attack_success_rate(triggered[:1], y[:1], 0))  # only target-class samples: undefined


def test_interclass_metrics_against_hand_computed_values():
    y = torch.tensor([1, 1, 1, 2, 2, 0, 3, 3])
    pred = onehot([1, 2, 0, 1, 2, 0, 3, 1])
    # classes 1 and 2: samples 0-4; right: 0, 4 -> 2/5; swapped (1 as 2, 2 as 1): 1, 3 -> 2/5; others 5-7: 2/3
    out = cm.interclass_metrics(pred, y, (1, 2))
    assert out == pytest.approx({"interclass_acc": 0.4, "interclass_confusion": 0.4, "interclass_other_acc": 2 / 3})


class PatchDetector(nn.Module):
    """Predicts class 0 when the bottom-right pixel is 1, else the class stored in the top-left pixel."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # logits_of finds the device from a parameter

    def forward(self, x):
        z = torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 4).float()
        return torch.where((x[:, 0, -1, -1] == 1)[:, None], onehot([0] * len(x)), z)


def test_corrective_metrics_on_a_model():
    y = torch.tensor([0, 1, 2, 3, 3])
    x = torch.zeros(5, 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor([0, 1, 2, 3, 1]).float()  # the model gets sample 4 wrong when clean
    bn = BadNets(count=1, patch_size=1, value=1.0)
    out = cm.corrective_metrics(PatchDetector(), bn, x, y)
    assert out == pytest.approx({"backdoor_asr": 1.0, "backdoor_clean_acc": 0.75, "backdoor_triggered_acc": 0.0})
    assert cm.corrective_metrics(PatchDetector(), NoPoison(), x, y) == {}
    ic = cm.corrective_metrics(PatchDetector(), InterClass(classes=[1, 3]), x, y)
    assert ic == pytest.approx({"interclass_acc": 2 / 3, "interclass_confusion": 1 / 3, "interclass_other_acc": 1.0})


# ---- End to end: a backdoor on scikit-learn's digits ---------------------------------------------------------------

def test_a_model_trained_on_badnets_digits_has_the_backdoor_and_a_clean_one_does_not():
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 1×8×8 in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test, train = perm[:360].sort().values, perm[360:].sort().values
    bn = BadNets(share=0.05, patch_size=2, target_class=0, seed=0)  # conf/poison/badnets.yaml's defaults
    px, py, ids = bn(x, y, train)
    assert bn.value_used == 1.0 and len(ids) == round(0.05 * len(train))
    clean = train[~torch.isin(train, ids)]  # the clean model: trained without any manipulated sample

    def fit(inputs, labels):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(200):  # full batch: about a second on one core
            opt.zero_grad()
            nn.functional.cross_entropy(net(inputs), labels).backward()
            opt.step()
        return net

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and leaves the other cores alone
    try:
        poisoned_net, clean_net = fit(px[train], py[train]), fit(x[clean], y[clean])
    finally:
        torch.set_num_threads(threads)
    got = {name: cm.corrective_metrics(net, bn, x[test], y[test])
           for name, net in (("poisoned", poisoned_net), ("clean", clean_net))}
    assert got["poisoned"]["backdoor_asr"] > 0.8
    assert got["clean"]["backdoor_asr"] < 0.2  # near chance: the trigger means nothing to it
    for name in got:  # both still classify clean digits
        assert got[name]["backdoor_clean_acc"] > 0.9
