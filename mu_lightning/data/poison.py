"""Manipulations of the training set that corrective unlearning removes: a backdoor trigger, or swapped labels.

``conf/poison/<name>.yaml`` names one (``poison=badnets``, ``poison=interclass``; ``poison=none`` is the default and
changes nothing). It is applied to the dataset's tensors once, after the train/val/test split and before the forget
request, and only ever touches training samples; val and test stay clean, so metrics see the true labels.

A manipulation is a callable ``poison(x, y, train_ids=None, num_classes=None) -> Poisoned(x, y, ids)``:

- ``x`` ``[N, C, H, W]`` and ``y`` ``[N]`` are every sample of the dataset; ``train_ids`` the sample ids (positions
  in ``x``) of the training split, or None when every sample is a training sample.
- It returns new tensors (the inputs are left as they are; a tensor it does not change is returned as is) and
  ``ids``: the sorted int64 sample ids it manipulated, a subset of ``train_ids`` (what ``poison_ids.txt`` lists and
  what ``forget=poisoned`` draws from).
- ``check_fits(num_classes, image_hw)`` raises ConfigError when the settings cannot fit a dataset with that many
  classes and ``H×W`` images (the pipeline calls it from the dataset's config before any data loads); ``badnets``
  refuses samples that are not images (1-D features: ``image_hw`` with fewer than two dimensions).
- ``fingerprint()`` is a JSON-able dict of its settings for the stage-cache key: ``{}`` for ``none``, so a run
  without a manipulation keeps its key.

Every draw uses its own ``seed``, so the manipulated samples do not move when the training seed or the forget
request changes. Bad settings raise ``ConfigError`` naming the option (exit code 2).

References: Goel, Prabhu, Torr, Kumaraguru, Sanyal, "Corrective Machine Unlearning", TMLR 2024, code
github.com/drimpossible/corrective-unlearning-bench (``src/datasets.py``: ``manip_dataset``, ``DatasetWrapper``);
Gu, Dolan-Gavitt, Garg, "BadNets", 2017; Schoepf, Foster, Brintrup, "Potion: Towards Poison Unlearning", 2024.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from mu_lightning.errors import ConfigError

POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")


class Poisoned(NamedTuple):
    """What a manipulation returns: every sample's inputs and labels after it, and the manipulated sample ids."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor  # sorted int64 sample ids (positions in x), all in the training split


def _share_or_count(share: Any, count: Any) -> tuple[float | None, int | None]:
    """Validated ``share`` (0 < share <= 1) and ``count`` (a positive integer; when set, it wins over share)."""
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"poison.count={count!r} is not allowed: it must be a positive integer, or null to use "
                              "poison.share")
        return None, count
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < float(share) <= 1:
        raise ConfigError(f"poison.share={share!r} is out of range: it must be > 0 and <= 1 (or set poison.count)")
    return float(share), None


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"poison.seed={seed!r} is not allowed: it must be an integer")
    return seed


def _train_ids(y: torch.Tensor, train_ids: torch.Tensor | None) -> torch.Tensor:
    return torch.arange(len(y)) if train_ids is None else torch.as_tensor(train_ids, dtype=torch.int64).sort().values


def _num_classes(y: torch.Tensor, num_classes: int | None) -> int:
    return int(y.max()) + 1 if num_classes is None else int(num_classes)


def _draw(pool: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """``k`` of the sample ids in ``pool`` (sorted), drawn without replacement with ``seed``; sorted."""
    gen = torch.Generator().manual_seed(int(seed))
    return pool[torch.randperm(len(pool), generator=gen)[:k]].sort().values


def image_hw(sample_shape: Sequence[int]) -> tuple[int, int]:
    """The ``(H, W)`` of samples of shape ``[C, H, W]`` or ``[H, W]`` (the last two dimensions); ConfigError for
    samples with fewer than two dimensions (feature vectors), which have no image to stamp a patch on."""
    shape = [int(s) for s in sample_shape]
    if len(shape) < 2:
        raise ConfigError(f"poison=badnets stamps a square patch on images, samples of shape [C, H, W] or [H, W], but "
                          f"this dataset's samples have shape {shape} (dataset.input_shape): 1-D features have no "
                          "H×W; use poison=interclass (labels only) or give the data an image shape")
    return shape[-2], shape[-1]


def patch_origin(sample_shape: Sequence[int], patch_size: int, position: str | Sequence[int]) -> tuple[int, int]:
    """The (row, col) of the patch's top-left pixel in samples of ``sample_shape`` (``[..., H, W]``, or just
    ``(H, W)``); ConfigError if the samples are not images (``image_hw``) or the patch does not fit."""
    h, w = image_hw(sample_shape)
    if patch_size > h or patch_size > w:
        raise ConfigError(f"poison.patch_size={patch_size} is larger than the images ({h}×{w}): it must be at most "
                          f"{min(h, w)}")
    if isinstance(position, str):
        row = {"top": 0, "bottom": h - patch_size, "center": (h - patch_size) // 2}[position.split("-")[0]]
        col = {"left": 0, "right": w - patch_size, "center": (w - patch_size) // 2}[position.split("-")[-1]]
        return row, col
    row, col = (int(v) for v in position)
    if not (0 <= row <= h - patch_size and 0 <= col <= w - patch_size):
        raise ConfigError(f"poison.position=[{row}, {col}]: a {patch_size}×{patch_size} patch there leaves the "
                          f"{h}×{w} image; row must be in [0, {h - patch_size}] and col in [0, {w - patch_size}]")
    return row, col


def stamp(x: torch.Tensor, patch_size: int, position: str | Sequence[int] = "bottom-right",
          value: float = 1.0) -> torch.Tensor:
    """A copy of ``x`` (``[..., H, W]``: one image or a batch) with a square ``patch_size`` patch set to ``value`` in
    every channel at ``position`` (a corner name, ``center``, or the ``(row, col)`` of its top-left pixel).

    ``value`` is in the space of ``x`` as stored: for standardised inputs, a standardised value.
    """
    row, col = patch_origin(x.shape[-2:], patch_size, position)
    out = x.clone()
    out[..., row:row + patch_size, col:col + patch_size] = value
    return out


class NoPoison:
    """``poison=none``: the training set as it is; no manipulated sample."""

    name = "none"

    def __call__(self, x: torch.Tensor, y: torch.Tensor, train_ids: torch.Tensor | None = None,
                 num_classes: int | None = None) -> Poisoned:
        return Poisoned(x, y, torch.empty(0, dtype=torch.int64))

    def check_fits(self, num_classes: int, image_hw: Sequence[int]) -> None:
        """Nothing to check: fits every dataset."""

    def fingerprint(self) -> dict[str, Any]:
        return {}  # no key entry: runs without a manipulation keep the cache keys they had

    def __repr__(self) -> str:
        return "NoPoison()"


class BadNets:
    """A backdoor (Gu et al. 2017, as in the Corrective Machine Unlearning benchmark): a square trigger patch is
    stamped onto some training samples, whose labels become ``target_class``. A model that learns it predicts the
    target class for any input carrying the trigger; ``trigger(x)`` stamps the same patch on test inputs.

    Args:
        share: manipulated samples as a share of the training set, 0 < share <= 1 (the papers give 0.2%, 1%, 2%).
        count: the number of manipulated samples instead of ``share`` (the benchmark's ``--forget_set_size``).
        target_class: the label the manipulated samples get (the benchmark uses class 0).
        patch_size: side of the square trigger in pixels (the benchmark: 3 on 32×32 CIFAR).
        position: ``bottom-right`` (the benchmark's), ``bottom-left``, ``top-right``, ``top-left``, ``center``, or
            ``[row, col]`` of the patch's top-left pixel.
        value: the trigger's pixel value in the space of the stored tensors (after any scaling or per-channel
            standardisation the dataset source applies); null: the largest value of the training inputs, as the
            benchmark does with its normalised training set (1.0 for digits in [0, 1]; about 2.1 for standardised
            CIFAR-10).
        include_target: false: draw only from training samples whose label is not ``target_class``, so every
            manipulated sample pairs the trigger with a wrong label (the classic BadNets setting); true: draw from
            the whole training set, as the benchmark's code does (``np.random.choice`` over all training samples),
            so a few manipulated samples keep their true label and only get the trigger.
        seed: the seed of the draw.
    """

    name = "badnets"

    def __init__(self, share: float | None = 0.05, count: int | None = None, target_class: int = 0,
                 patch_size: int = 3, position: str | Sequence[int] = "bottom-right", value: float | None = None,
                 include_target: bool = False, seed: int = 0):
        self.share, self.count = _share_or_count(share, count)
        if isinstance(target_class, bool) or not isinstance(target_class, int) or target_class < 0:
            raise ConfigError(f"poison.target_class={target_class!r} is not allowed: it must be a class id >= 0")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ConfigError(f"poison.patch_size={patch_size!r} is not allowed: it must be a positive integer")
        if isinstance(position, str):
            if position not in POSITIONS:
                raise ConfigError(f"poison.position={position!r} is not allowed: use one of {', '.join(POSITIONS)}, "
                                  "or [row, col] of the patch's top-left pixel")
        else:
            try:
                position = [int(v) for v in position]
            except (TypeError, ValueError):
                position = None
            if position is None or len(position) != 2:
                raise ConfigError("poison.position must be one of " + ", ".join(POSITIONS) + " or [row, col] (two "
                                  "integers): the patch's top-left pixel")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            raise ConfigError(f"poison.value={value!r} is not allowed: it must be a finite number, or null for the "
                              "largest value of the training inputs")
        if not isinstance(include_target, bool):
            raise ConfigError(f"poison.include_target={include_target!r} is not allowed: it must be true or false")
        self.target_class, self.patch_size, self.position = target_class, patch_size, position
        self.value, self.include_target, self.seed = value, include_target, _check_seed(seed)
        self.value_used: float | None = None if value is None else float(value)  # set by __call__ when null

    def __call__(self, x: torch.Tensor, y: torch.Tensor, train_ids: torch.Tensor | None = None,
                 num_classes: int | None = None) -> Poisoned:
        train = _train_ids(y, train_ids)
        self.check_fits(_num_classes(y, num_classes), x.shape[1:])
        pool = train if self.include_target else train[y[train] != self.target_class]
        k = self.count if self.count is not None else round(self.share * len(train))
        where = "training samples" if self.include_target else f"training samples not of class {self.target_class}"
        what = f"poison.count={self.count}" if self.count is not None else \
            f"poison.share={self.share} ({k} of {len(train)} training samples)"
        if k < 1:
            raise ConfigError(f"{what} manipulates no sample: choose a larger share, or set poison.count")
        if k > len(pool):
            raise ConfigError(f"{what} is more than the {len(pool)} {where}: choose a smaller "
                              f"{'count' if self.count is not None else 'share'}")
        ids = _draw(pool, k, self.seed)
        if self.value is None:
            self.value_used = float(x[train].max())
        out_x, out_y = x.clone(), y.clone()
        out_x[ids] = self.trigger(x[ids])
        out_y[ids] = self.target_class
        return Poisoned(out_x, out_y, ids)

    def check_fits(self, num_classes: int, image_hw: Sequence[int]) -> None:
        """ConfigError unless ``target_class`` is one of ``num_classes`` classes, the samples are images (``image_hw``
        is their shape, or its last two dimensions: at least two) and the patch fits them: checked from the
        dataset's config before any data loads, and again on the data."""
        if self.target_class >= num_classes:
            raise ConfigError(f"poison.target_class={self.target_class} is out of range: the dataset has "
                              f"{num_classes} classes (0 to {num_classes - 1})")
        patch_origin(image_hw, self.patch_size, self.position)

    def trigger(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` (``[..., H, W]``) with this trigger stamped on: for the attack success rate on test
        samples. With ``value=null`` it needs the value found by applying the manipulation first."""
        if self.value_used is None:
            raise RuntimeError("BadNets.trigger: value=null is resolved from the training inputs; apply the "
                               "manipulation first (poison(x, y, train_ids)), or set poison.value")
        return stamp(x, self.patch_size, self.position, self.value_used)

    def fingerprint(self) -> dict[str, Any]:
        return {"poison": self.name, "share": self.share, "count": self.count, "target_class": self.target_class,
                "patch_size": self.patch_size, "position": self.position, "value": self.value,
                "include_target": self.include_target, "seed": self.seed}

    def __repr__(self) -> str:
        return "BadNets(" + ", ".join(f"{k}={v!r}" for k, v in self.fingerprint().items() if k != "poison") + ")"


class InterClass:
    """Interclass confusion (the Corrective Machine Unlearning benchmark): labels of some training samples of two
    classes are swapped, a → b and b → a; the inputs are untouched. A model trained on it confuses the two classes.

    Args:
        classes: the two classes ``[a, b]`` (the benchmark: 3 and 5, cat and dog, on CIFAR-10).
        share: the share of each of the two classes' training samples relabelled, 0 < share <= 1; the benchmark
            takes the same number from each class (CIFAR-10: 250, 1,250 or 2,500 of the 5,000 per class).
        count: the number of relabelled samples instead of ``share``, half from each class (must be even), as the
            benchmark's ``--forget_set_size``.
        seed: the seed of the draw (the benchmark takes the first samples of each class in dataset order).
    """

    name = "interclass"

    def __init__(self, classes: Sequence[int] = (3, 5), share: float | None = 0.25, count: int | None = None,
                 seed: int = 0):
        try:
            pair = [int(c) for c in classes]
            ok = len(pair) == 2 and all(not isinstance(c, bool) and int(c) == c for c in classes)
        except (TypeError, ValueError):
            pair, ok = [], False
        if not ok:
            raise ConfigError(f"poison.classes={classes!r} is not allowed: it must be two class ids [a, b]")
        if pair[0] == pair[1]:
            raise ConfigError(f"poison.classes={pair}: the two classes must differ")
        if min(pair) < 0:
            raise ConfigError(f"poison.classes={pair}: class ids must be >= 0")
        self.share, self.count = _share_or_count(share, count)
        if self.count is not None and self.count % 2:
            raise ConfigError(f"poison.count={self.count} is odd: half comes from each of the two classes, so it "
                              "must be even")
        self.classes, self.seed = tuple(pair), _check_seed(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, train_ids: torch.Tensor | None = None,
                 num_classes: int | None = None) -> Poisoned:
        train = _train_ids(y, train_ids)
        self.check_fits(_num_classes(y, num_classes), x.shape[-2:])
        a, b = self.classes
        chosen = []
        for k, c in enumerate((a, b)):
            pool = train[y[train] == c]
            if len(pool) == 0:
                raise ConfigError(f"poison.classes={list(self.classes)}: class {c} has no training sample")
            n = self.count // 2 if self.count is not None else round(self.share * len(pool))
            what = f"poison.count={self.count}" if self.count is not None else \
                f"poison.share={self.share} ({n} of the {len(pool)} training samples of class {c})"
            if n < 1:
                raise ConfigError(f"{what} relabels no sample of class {c}: choose a larger share, or set "
                                  "poison.count")
            if n > len(pool):
                raise ConfigError(f"{what} needs {n} training samples of class {c}, which has {len(pool)}: choose a "
                                  "smaller count")
            chosen.append(_draw(pool, n, self.seed + k))
        out_y = y.clone()
        out_y[chosen[0]], out_y[chosen[1]] = b, a
        return Poisoned(x, out_y, torch.cat(chosen).sort().values)

    def check_fits(self, num_classes: int, image_hw: Sequence[int]) -> None:
        """ConfigError unless both classes are among ``num_classes`` (``image_hw``: any image size fits)."""
        if max(self.classes) >= num_classes:
            raise ConfigError(f"poison.classes={list(self.classes)} is out of range: the dataset has {num_classes} "
                              f"classes (0 to {num_classes - 1})")

    def fingerprint(self) -> dict[str, Any]:
        return {"poison": self.name, "classes": list(self.classes), "share": self.share, "count": self.count,
                "seed": self.seed}

    def __repr__(self) -> str:
        return "InterClass(" + ", ".join(f"{k}={v!r}" for k, v in self.fingerprint().items() if k != "poison") + ")"
