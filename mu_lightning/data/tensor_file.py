"""Bring your own data: one ``.pt`` (a dict of tensors, loaded with ``weights_only=True``) or ``.npz`` file.

Keys: ``x`` (required; float, or uint8 pixels that become x / 255; shape ``[N, ...]``, e.g. ``[N, C, H, W]``),
``y`` (required; integer labels >= 0, ``[N]``) and optionally ``group`` (integer entity id per sample, for
``forget=entity``), ``split`` (0 = train, 1 = test, per sample: your own test split) and ``fine`` (a finer integer
label inside ``y``, for ``forget=subclass``). Anything else in the file is refused, so a misspelt key cannot be
silently ignored.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from mu_lightning.configurable import configurable
from mu_lightning.data.sources import Samples, assign_entities, standardise
from mu_lightning.errors import ConfigError

KEYS = ("x", "y", "group", "split", "fine")


@configurable
def tensor_file(path: str | None, input_shape: list[int] | None = None, num_classes: int | None = None,
                normalize: bool = False, num_entities: int | None = None, entity_seed: int = 0) -> Samples:
    """Read and check a user's file. ``num_entities`` assigns seeded entities when the file has no ``group``."""
    arrays = _load(path)
    unknown = sorted(set(arrays) - set(KEYS))
    missing = [k for k in ("x", "y") if k not in arrays]
    if unknown or missing:
        raise ConfigError(f"dataset.path={path}: holds keys {sorted(arrays)}; it needs x and y and may add group, "
                          f"split and fine ({'missing ' + str(missing) if missing else 'unknown ' + str(unknown)})")
    x = arrays["x"]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.dtype.is_floating_point:
        raise ConfigError(f"dataset.path={path}: x has dtype {x.dtype}; it must be floating point or uint8 pixels")
    if x.dim() < 2 or len(x) == 0:
        raise ConfigError(f"dataset.path={path}: x has shape {list(x.shape)}; it must be [N, ...] with N > 0")
    x = x.float()
    if not torch.isfinite(x).all():
        bad = torch.nonzero(~torch.isfinite(x.flatten(1)).all(1)).flatten()
        raise ConfigError(f"dataset.path={path}: x has NaN or infinite values in samples {bad[:5].tolist()}")
    fields = {k: _integer(path, k, arrays[k], len(x)) for k in KEYS[1:] if k in arrays}
    for k in ("y", "fine"):
        if k in fields and (fields[k] < 0).any():
            raise ConfigError(f"dataset.path={path}: {k} has negative labels; labels must be 0, 1, 2, ...")
    if "split" in fields and not torch.isin(fields["split"], torch.tensor([0, 1])).all():
        raise ConfigError(f"dataset.path={path}: split must hold only 0 (train) and 1 (test)")
    if "split" in fields and not (fields["split"] == 0).any():
        raise ConfigError(f"dataset.path={path}: split marks no sample as training (0)")
    _check_config(path, x, fields["y"], input_shape, num_classes)
    stats = standardise(x, fields.get("split")) if normalize else None
    if "group" not in fields:
        fields["group"] = assign_entities(len(x), num_entities, entity_seed)
    return Samples(x=x, pixel_stats=stats, **fields)


def _load(path: str | None) -> dict[str, torch.Tensor]:
    if not path:
        raise ConfigError("dataset=tensor_file needs dataset.path=<your .pt or .npz file>")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"dataset.path={path}: no such file")
    if file.suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as npz:
                return {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
        except (ValueError, OSError, TypeError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise ConfigError(f"dataset.path={path}: not a readable .npz of numeric arrays ({type(err).__name__}: "
                              f"{err})") from None
    if file.suffix == ".pt":
        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError) for bad files
            raise ConfigError(f"dataset.path={path}: not a readable torch file of tensors ({err})") from None
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise ConfigError(f"dataset.path={path}: must hold a dict of tensors ({{'x': ..., 'y': ...}})")
        return data
    raise ConfigError(f"dataset.path={path}: unknown file type {file.suffix!r}; use .pt or .npz")


def _integer(path: str, key: str, t: torch.Tensor, n: int) -> torch.Tensor:
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise ConfigError(f"dataset.path={path}: {key} has dtype {t.dtype}; it must be an integer type")
    if t.dim() != 1 or len(t) != n:
        raise ConfigError(f"dataset.path={path}: {key} has shape {list(t.shape)}; it must be [{n}], one per sample "
                          "of x")
    return t.long()


def _check_config(path: str, x: torch.Tensor, y: torch.Tensor, input_shape, num_classes) -> None:
    """The model is built from dataset.input_shape and dataset.num_classes: say what they should be."""
    shape, classes = list(x.shape[1:]), int(y.max()) + 1
    if input_shape is None or num_classes is None:
        raise ConfigError(f"dataset=tensor_file: set dataset.input_shape and dataset.num_classes for {path}; its "
                          f"samples have shape {shape} and its labels go up to {classes - 1}, so: "
                          f"dataset.input_shape=[{','.join(map(str, shape))}] dataset.num_classes={classes}")
    if list(input_shape) != shape:
        raise ConfigError(f"dataset.input_shape={list(input_shape)} but {path} holds samples of shape {shape}")
