"""Weights made elsewhere: read a checkpoint into a model, say what does not fit, and key a model that starts from a
checkpoint directory by its files (shared by the stage cache, the checks and the Python API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mu_lightning.errors import ConfigError
from mu_lightning.files import file_digest


def load_weights(model: nn.Module, path: str | Path, option: str) -> str:
    """Load the checkpoint at ``path`` into ``model`` and return the file's SHA-256.

    A checkpoint is a state dict, or a Lightning checkpoint (``{"state_dict": ...}``) whose model keys carry the
    ``model.`` prefix of the stage modules; it is read with ``weights_only=True``. A ConfigError naming ``option``
    if the file is missing or unreadable, if its keys or shapes do not fit ``model`` (the first mismatches), or if
    it holds NaN, infinite or huge (``HUGE``) values."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{option}={path}: no such file")
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch errors alike: the file is not usable
        raise ConfigError(f"{option}={path} is not a checkpoint torch.load(weights_only=True) can read "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    state = _state_dict(saved)
    if state is None:
        raise ConfigError(f"{option}={path} holds a {type(saved).__name__}, not a state dict or a Lightning "
                          "checkpoint with a 'state_dict'")
    problems = shape_mismatches({k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
    if problems:
        raise ConfigError(f"{option}={path} does not fit model={type(model).__name__}: {'; '.join(problems)}")
    if (problem := state_problem(state, None) or _huge(state)) is not None:
        raise ConfigError(f"{option}={path} is not a usable model: {problem.removeprefix('its ')}")
    model.load_state_dict(state)
    return file_digest(file)


HUGE = 1e30  # a weight this large makes every logit infinite: no trained model holds one


def model_key(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config as a cache key part: with a ``path`` directory (``model=hf``), also the SHA-256 of each of
    its files, so new weights or a new tokenizer under the same path never reuse a stage trained from the old ones
    (a 7B checkpoint takes tens of seconds to hash)."""
    path = model_cfg.get("path")
    if not path or not Path(path).is_dir():
        return model_cfg
    files = sorted(f for f in Path(path).rglob("*") if f.is_file())
    return {**model_cfg, "files_sha256": {str(f.relative_to(path)): file_digest(f) for f in files}}


def _huge(state: dict[str, torch.Tensor]) -> str | None:
    bad = [k for k, v in state.items() if v.is_floating_point() and v.numel() and v.abs().max() > HUGE]
    return f"weights hold values above {HUGE:g} in magnitude ({bad[:3]})" if bad else None


def _state_dict(saved: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict):
        saved = saved["state_dict"]
        if any(str(k).startswith("model.") for k in saved):  # a stage module's: its network is ``self.model``
            saved = {k[len("model."):]: v for k, v in saved.items() if k.startswith("model.")}
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        return None
    return saved


def shape_mismatches(expected: dict[str, tuple], given: dict[str, torch.Tensor], first: int = 3) -> list[str]:
    """The first ``first`` missing keys, unexpected keys and shape differences of the state dict ``given`` against
    the names and shapes ``expected``, as readable phrases (empty if it fits)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} has shape {list(given[k].shape)} in the checkpoint but {list(expected[k])} in the model"
              for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k])]
    out = [f"{what} {', '.join(keys[:first])}" + (f" and {len(keys) - first} more" if len(keys) > first else "")
           for what, keys in (("missing keys", missing), ("unexpected keys", unexpected)) if keys]
    return out + shapes[:first]


def state_problem(state: Any, shapes: dict[str, tuple] | None) -> str | None:
    """What is wrong with a loaded state dict, or None: a dict of tensors with finite values and, when ``shapes``
    is given, exactly those names and shapes."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "its weights are not a state dict of tensors"
    if shapes is not None and (wrong := shape_mismatches(shapes, state)):
        return f"its weights do not fit the model ({'; '.join(wrong)})"
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    return f"its weights hold NaN or infinite values ({bad[:3]})" if bad else None
