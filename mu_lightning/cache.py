"""Stage cache: trained original and gold weights, keyed by a hash of exactly what determines them.

An entry is two files, ``<stage>-<key>.pt`` (the state dict) and ``<stage>-<key>.json`` (its size, SHA-256 and
facts about the training run). Both are written to a temporary file and renamed into place, the ``.json`` last, so
an entry without a matching ``.json`` was never completed and is not used. One file lock per key makes concurrent
jobs that need the same entry wait for one trainer instead of training twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from mu_lightning.files import atomic_write, file_digest

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
FORMAT = 1  # bump when the meaning of a stored entry changes


def cache_key(spec: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``spec`` (plain values only), first 20 hex digits."""
    text = json.dumps({"format": FORMAT, **spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StageCache:
    """Get-or-train for one directory of entries; ``enabled=False`` always trains and stores nothing."""

    def __init__(self, root: str | os.PathLike, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled
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
            info = json.loads(record.read_text())
            problem = None
            if not weights.exists():
                problem = "its weights file is missing"
            elif weights.stat().st_size != info["size"]:
                problem = f"size {weights.stat().st_size} != recorded {info['size']}"
            elif file_digest(weights) != info["sha256"]:
                problem = "its SHA-256 does not match the recorded one"
            if problem is None:
                return torch.load(weights, map_location="cpu", weights_only=True), info["meta"]
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            problem = f"it could not be read ({type(err).__name__}: {err})"
        log.warning("cache entry %s is damaged (%s): removing it and training again", weights.name, problem)
        record.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
        return None

    def store(self, stage: str, key: str, state: StateDict, meta: dict) -> None:
        weights, record = self.paths(stage, key)
        atomic_write(weights, lambda f: torch.save(state, f))
        info = {"stage": stage, "key": key, "size": weights.stat().st_size, "sha256": file_digest(weights),
                "meta": meta}
        atomic_write(record, lambda f: f.write(json.dumps(info, indent=1).encode()))

    def get_or_train(self, stage: str, key: str, train: Callable[[], tuple[StateDict, dict]]
                     ) -> tuple[StateDict, dict, bool]:
        """``(state, meta, hit)``: the stored entry if valid, else ``train()``'s result, stored under the key lock."""
        if not self.enabled:
            return (*train(), False)
        lock = FileLock(str(self.root / f"{stage}-{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("%s: another job is producing cache entry %s; waiting for it", stage, key)
            lock.acquire()
        try:
            for leftover in self.root.glob(f".{stage}-{key}.*.tmp"):  # from a writer killed mid-write
                leftover.unlink(missing_ok=True)
            found = self.load(stage, key)
            if found is not None:
                return (*found, True)
            state, meta = train()
            self.store(stage, key, state, meta)
            return state, meta, False
        finally:
            lock.release()
