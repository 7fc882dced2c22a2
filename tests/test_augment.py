"""Batched train-time augmentation: exact crops and flips, reproducible draws, training only, part of the cache key."""

from __future__ import annotations

import pytest
import torch

from mu_lightning.data.augment import CropFlip
from mu_lightning.data.batches import TensorBatches
from mu_lightning.errors import ConfigError

AUGMENT = "dataset.augment={_target_:mu_lightning.data.augment.CropFlip,padding:1,flip:true}"


def test_crop_is_the_padded_image_at_the_drawn_offsets():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) + 1  # no zeros: padding shows
    out = CropFlip(padding=2, flip=False)(x, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)  # the same draws, made one sample at a time by slicing
    top, left = torch.randint(0, 5, (2, 1), generator=gen), torch.randint(0, 5, (2, 1), generator=gen)
    padded = torch.zeros(2, 3, 8, 9)
    padded[:, :, 2:6, 2:7] = x
    for i in range(2):
        t, lft = int(top[i]), int(left[i])
        assert torch.equal(out[i], padded[i, :, t : t + 4, lft : lft + 5])
    assert out.shape == x.shape


def test_flip_mirrors_about_half_of_the_samples_and_leaves_the_rest():
    x = torch.randn(400, 1, 2, 3)
    out = CropFlip(padding=0, flip=True)(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert (flipped ^ kept).all()  # every sample is one or the other
    assert 150 < int(flipped.sum()) < 250


def test_batches_augment_reproducibly_and_only_when_asked():
    x, y = torch.randn(50, 1, 4, 4), torch.arange(50)
    aug = CropFlip(padding=1)

    def epoch(augment, seed=3):
        return list(TensorBatches(x, y, 16, shuffle=True, seed=seed, augment=augment))

    first, again, other = epoch(aug), epoch(aug), epoch(aug, seed=4)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    plain = epoch(None)
    # the same order: augmentation draws come after the shuffle's
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, plain, strict=True))
    assert all(torch.equal(b[0], x[b[1]]) for b in plain)
    assert not all(torch.equal(b[0], x[b[1]]) for b in first)


@pytest.mark.parametrize("kwargs, message", [
    ({"padding": -1}, "dataset.augment.padding=-1 is not allowed: it must be an integer >= 0"),
    ({"padding": 1.5}, "dataset.augment.padding=1.5"),
    ({"flip": "yes"}, "dataset.augment.flip='yes' is not allowed: it must be true or false"),
])
def test_bad_settings_name_the_option(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        CropFlip(**kwargs)


def test_augmentation_trains_another_model_and_keys_the_stage_cache(run_pipeline):
    # digits, not the synthetic data: a shifted digit is the same digit, a shifted synthetic vector is noise
    args = ("dataset=digits", "logger=none", "train.epochs=8", "unlearner=none", "callbacks.forget_retain=null")
    plain = run_pipeline(*args, out="plain", fast=False)
    augmented = run_pipeline(*args, AUGMENT, out="aug", fast=False)
    again = run_pipeline(*args, AUGMENT, out="again", fast=False)
    for stage in ("original", "gold"):
        assert augmented["stages"][stage]["cache_key"] != plain["stages"][stage]["cache_key"]
        assert not augmented["stages"][stage]["cache_hit"]
        assert again["stages"][stage]["cache_hit"]
        assert again["stages"][stage]["cache_key"] == augmented["stages"][stage]["cache_key"]
    assert augmented["metrics"]["original/retain_acc"] != plain["metrics"]["original/retain_acc"]
    assert augmented["metrics"]["original/retain_acc"] > 0.5  # still learns (chance is 0.1)


def test_a_bad_augmentation_stops_the_run_before_anything_is_written(run_pipeline, tmp_path):
    with pytest.raises(ConfigError, match="dataset.augment.padding=-2"):
        run_pipeline(AUGMENT.replace("padding:1", "padding:-2"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
