"""File helpers shared by the stage cache, the dataset archives and the run directory: digests, atomic writes, the
writable-directory check and the setting aside of an earlier run's outputs."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
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


LOW_SPACE = 16 << 20  # bytes free below which a failed write is reported as a full disk


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
    except RuntimeError as err:  # torch.save words a failed write in its own terms ("PytorchStreamWriter failed")
        Path(tmp).unlink(missing_ok=True)
        full = shutil.disk_usage(path.parent).free < LOW_SPACE
        raise OSError(errno.ENOSPC if full else errno.EIO, os.strerror(errno.ENOSPC) if full else
                      f"writing failed ({str(err).splitlines()[0][:120]})", str(path)) from err
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


# what a run writes into its directory (Hydra's own .hydra/ and *.log are its business): set aside before a rerun
RUN_OUTPUTS = ("results.json", "logits.pt", "unlearned.pt", "*ids*.txt", "split_ids.json", "csv", "tensorboard",
               "wandb", "lightning_logs", "previous")


# the files results.json records the SHA-256 of (``files``): eval.py run_dir= checks they belong together
RECORDED = ("unlearned.pt", "logits.pt", "*ids*.txt", "split_ids.json")


def run_digests(run_dir: str | os.PathLike) -> dict[str, str]:
    """``{file name: SHA-256}`` of the ``RECORDED`` files in ``run_dir``."""
    root = Path(run_dir)
    return {p.name: file_digest(p) for p in sorted({p for pattern in RECORDED for p in root.glob(pattern)})
            if p.is_file()}


def mismatched_files(run_dir: str | os.PathLike, recorded: dict[str, str]) -> list[str]:
    """The ``RECORDED`` files of ``run_dir`` that differ from ``recorded`` (missing, changed, or not recorded)."""
    found = run_digests(run_dir)
    return sorted(name for name in {*found, *recorded} if found.get(name) != recorded.get(name))


def set_aside_previous(run_dir: str | os.PathLike) -> Path | None:
    """Move an earlier run's outputs in ``run_dir`` into ``run_dir/previous/`` (an older ``previous/`` moves inside
    the new one, so nothing is deleted); the new run then never sits beside files of another. Returns the folder,
    or None when there was nothing to move."""
    root = Path(run_dir)
    found = sorted({p for pattern in RUN_OUTPUTS for p in root.glob(pattern)})
    if not found:
        return None
    stuck = [p for p in found if p.is_dir() and not os.access(p, os.W_OK | os.X_OK)]
    if stuck:  # a folder cannot move to another parent without write permission on itself: check before moving any
        raise ConfigError(f"hydra.run.dir={root} holds an earlier run's {stuck[0].name}/, which cannot be moved aside "
                          "(not writable); make it writable, remove it, or choose another run directory")
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".previous."))
    for path in found:
        shutil.move(str(path), str(staging / path.name))
    staging.replace(root / "previous")
    return root / "previous"


RUN_LOCK = ".run.lock"  # one run per run directory at a time; its side file .run.lock.holder names the holder
_held: dict[str, Any] = {}  # run directory -> the FileLock this process holds on it


def lock_run_dir(run_dir: str | os.PathLike) -> None:
    """Hold ``run_dir``'s lock until ``unlock_run_dir`` (or the process ends); a ConfigError when another process
    holds it. Taking it again in the same process is a no-op."""
    from filelock import FileLock, Timeout

    root = Path(run_dir).resolve()
    if str(root) in _held:
        return
    root.mkdir(parents=True, exist_ok=True)
    lock, holder = FileLock(str(root / RUN_LOCK)), root / f"{RUN_LOCK}.holder"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = holder.read_text().strip() or "another process"
        except OSError:
            who = "another process"
        raise ConfigError(f"hydra.run.dir={run_dir} is in use by another run ({who}): two runs in one directory "
                          "would mix their files; wait for it to end or choose another directory") from None
    holder.write_text(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    _held[str(root)] = lock


def unlock_run_dir(run_dir: str | os.PathLike) -> None:
    lock = _held.pop(str(Path(run_dir).resolve()), None)
    if lock is not None:
        lock.release()


def check_dir_overrides(argv: list[str]) -> None:
    """A ``hydra.run.dir=`` or ``hydra.sweep.dir=`` on the command line names a directory this process can write
    (Hydra creates it before the run starts, with a traceback when it cannot); interpolated values are left to Hydra."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value:
            check_writable(value.strip("'\""), key, "choose a directory you can write")
