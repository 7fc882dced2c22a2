"""File helpers shared by the stage cache, the dataset archives and the run directory: digests, atomic writes and
the writable-directory check."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mu_lightning.errors import ConfigError


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks: ``sha256`` (cache entries) or ``md5`` (the checksum the
    datasets' pages publish; a guard against truncated or wrong files, not against an attacker)."""
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """``write(f)`` into a temporary file next to ``path``, synced and renamed into place: readers see the old file
    or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike, option: str, advice: str) -> None:
    """Create the directory ``path`` and write a file in it; a ConfigError naming ``option`` if that fails."""
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise ConfigError(f"{option}={root} is not writable ({err.strerror}); {advice}") from None
