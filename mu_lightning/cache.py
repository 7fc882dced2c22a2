"""Stage cache: trained original and gold weights, keyed by a hash of exactly what determines them.

An entry is two files, ``<stage>-<key>.pt`` (the state dict) and ``<stage>-<key>.json`` (its record: the format,
the stage and key it belongs to, the weights' size and SHA-256, and facts about the training run). Both are written
to a temporary file and renamed into place, the ``.json`` last, so an entry without a matching ``.json`` was never
completed and is not used. A load checks the record names this stage and key (a file copied over another entry's
name is not that entry) and that the weights are a state dict of the expected names and shapes with finite values;
anything else is removed with a warning and trained again. One file lock per key makes concurrent jobs that need the
same entry wait for one trainer instead of training twice; its side file ``.holder`` names the process holding it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from mu_lightning.files import atomic_write, file_digest
from mu_lightning.weights import state_problem

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
FORMAT = 2  # bump when the meaning of a stored entry changes (2: records bound to stage and key)
RECORD_FIELDS = {"format": int, "stage": str, "key": str, "size": int, "sha256": str, "meta": dict}
META_NUMBERS = ("fit_seconds", "steps", "samples", "flops", "grad_evals")  # facts later arithmetic reads
WAIT_NOTE_S = 60.0  # while another process holds a key's lock, say who it is this often


def cache_key(spec: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``spec`` (plain values only), first 20 hex digits."""
    text = json.dumps({"format": FORMAT, **spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StageCache:
    """Get-or-train for one directory of entries; ``enabled=False`` always trains and stores nothing.

    ``shapes`` (parameter name → shape, as the configured model's state dict has them) is what a loaded state dict
    must match; None checks names and shapes against nothing but still requires tensors with finite values."""

    def __init__(self, root: str | os.PathLike, enabled: bool = True, shapes: dict[str, tuple] | None = None):
        self.root, self.enabled, self.shapes = Path(root), enabled, shapes
        if enabled:  # writable: checks.check_data has checked it
            self.root.mkdir(parents=True, exist_ok=True)

    def paths(self, stage: str, key: str) -> tuple[Path, Path]:
        return self.root / f"{stage}-{key}.pt", self.root / f"{stage}-{key}.json"

    def load(self, stage: str, key: str) -> tuple[StateDict, dict] | None:
        """The entry's state dict and meta, or None if it is missing; a damaged entry is removed with a warning."""
        weights, record = self.paths(stage, key)
        if not record.exists():
            return None
        try:
            problem, found = self._read(stage, key, weights, record)
        except Exception as err:  # noqa: BLE001 - torch.load and json raise many types for damaged files
            problem, found = f"it could not be read ({type(err).__name__}: {str(err).splitlines()[0][:200]})", None
        if found is not None:
            return found
        log.warning("cache entry %s is damaged (%s): removing it and training again", weights.name, problem)
        record.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
        return None

    def _read(self, stage: str, key: str, weights: Path, record: Path) -> tuple[str | None, Any]:
        """``(None, (state, meta))`` for a sound entry, else ``(what is wrong, None)``."""
        info = json.loads(record.read_text())
        problem = record_problem(info, stage, key)
        if problem is None and not weights.exists():
            problem = "its weights file is missing"
        elif problem is None and weights.stat().st_size != info["size"]:
            problem = f"size {weights.stat().st_size} != recorded {info['size']}"
        elif problem is None and file_digest(weights) != info["sha256"]:
            problem = "its SHA-256 does not match the recorded one"
        if problem is not None:
            return problem, None
        state = torch.load(weights, map_location="cpu", weights_only=True)
        problem = state_problem(state, self.shapes)
        return (problem, None) if problem else (None, (state, info["meta"]))

    def store(self, stage: str, key: str, state: StateDict, meta: dict) -> None:
        weights, record = self.paths(stage, key)
        atomic_write(weights, lambda f: torch.save(state, f))
        info = {"format": FORMAT, "stage": stage, "key": key, "size": weights.stat().st_size,
                "sha256": file_digest(weights), "meta": meta}
        atomic_write(record, lambda f: f.write(json.dumps(info, indent=1).encode()))

    def get_or_train(self, stage: str, key: str, train: Callable[[], tuple[StateDict, dict]]
                     ) -> tuple[StateDict, dict, bool]:
        """``(state, meta, hit)``: the stored entry if valid, else ``train()``'s result, stored under the key lock."""
        if not self.enabled:
            return (*train(), False)
        lock_path = self.root / f"{stage}-{key}.lock"
        lock = FileLock(str(lock_path))
        _acquire(lock, lock_path, stage, key)
        try:
            for leftover in self.root.glob(f".{stage}-{key}.*.tmp"):  # from a writer killed mid-write
                leftover.unlink(missing_ok=True)
            found = self.load(stage, key)
            if found is not None:
                return (*found, True)
            state, meta = train()
            self.store(stage, key, state, meta)
            shutil.rmtree(self.work_dir(stage, key), ignore_errors=True)  # the stored entry replaces its checkpoints
            return state, meta, False
        finally:
            lock.release()

    def work_dir(self, stage: str, key: str) -> Path | None:
        """The work area of an entry being trained (its resumable checkpoint: docs/checkpoints.md), under the key's
        lock; removed once the entry is stored. None when the cache is off: nothing to resume into."""
        return self.root / "work" / f"{stage}-{key}" if self.enabled else None


def record_problem(info: Any, stage: str, key: str) -> str | None:
    """What is wrong with an entry's record for ``stage``/``key``, or None: a JSON object with every field of
    ``RECORD_FIELDS`` of its type, this cache's format, and this very stage and key."""
    if not isinstance(info, dict):
        return f"its record is a {type(info).__name__}, not an object"
    for name, kind in RECORD_FIELDS.items():
        if not isinstance(info.get(name), kind) or isinstance(info.get(name), bool):
            return f"its record lacks {name!r} or it is not a {kind.__name__}"
    if info["format"] != FORMAT:
        return f"its record has format {info['format']}, this version reads {FORMAT}"
    if (info["stage"], info["key"]) != (stage, key):
        return f"its record belongs to {info['stage']}-{info['key']}, not {stage}-{key}"
    wrong = [name for name in META_NUMBERS if name in info["meta"] and info["meta"][name] is not None
             and (isinstance(info["meta"][name], bool) or not isinstance(info["meta"][name], int | float))]
    return f"its record's meta.{wrong[0]} is not a number" if wrong else None


def _acquire(lock: FileLock, lock_path: Path, stage: str, key: str) -> None:
    """Take the key's lock, then name this process in its side file; while another holds it, say who every
    ``WAIT_NOTE_S`` seconds (a stopped process holds it until it is resumed or killed)."""
    holder = lock_path.with_suffix(".lock.holder")
    started, timeout = time.monotonic(), 0.0
    while True:
        try:
            lock.acquire(timeout=timeout)
            break
        except Timeout:
            try:
                who = holder.read_text().strip() or "an unknown process"
            except OSError:
                who = "an unknown process"
            log.warning("%s: cache entry %s is being produced by %s; waiting for it (%.0f s so far; if that "
                        "process is stopped or hung, end it and this run goes on)", stage, key, who,
                        time.monotonic() - started)
            timeout = WAIT_NOTE_S
    holder.write_text(f"pid {os.getpid()} on host {socket.gethostname()}\n")
