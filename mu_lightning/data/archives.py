"""Official dataset files: find them in ``data_dir``, or download them from their official URL and check the MD5.

MD5 because that is the checksum the datasets' own pages (and torchvision) publish; it guards against truncated or
wrong files, not against an attacker. Downloads go to a ``.part`` file, are checked, then renamed, under a file lock,
so concurrent jobs never read a half-written file. Files already in ``data_dir`` are used as they are (not re-hashed),
so hand-made files in the official format load too.
"""

from __future__ import annotations

import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from mu_lightning.errors import ConfigError
from mu_lightning.files import file_digest


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name in ``data_dir``, the URLs it is served from (tried in order) and its MD5."""

    name: str
    urls: tuple[str, ...]
    md5: str


def locate(dataset: str, data_dir: str | Path, files: list[RemoteFile], download: bool) -> dict[str, Path]:
    """Paths of ``files`` in ``data_dir``; missing ones are downloaded when ``download`` is true, else a ConfigError."""
    root = Path(data_dir).expanduser()
    missing = [f for f in files if not (root / f.name).is_file()]
    if missing and not download:
        raise ConfigError(
            f"dataset={dataset}: dataset.data_dir={root} lacks {[f.name for f in missing]}. Put the official files "
            f"there, or set dataset.download=true to fetch them from {missing[0].urls[0].rsplit('/', 1)[0]}/ "
            "(checksums are verified)")
    if missing:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".download.lock")):
            for f in missing:
                if not (root / f.name).is_file():  # another job may have fetched it while we waited
                    fetch(f, root / f.name)
    return {f.name: root / f.name for f in files}


def fetch(file: RemoteFile, dest: Path, timeout: float = 60.0) -> None:
    """Download ``file`` to ``dest`` from the first URL that answers; ConfigError if none does or the MD5 differs."""
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in file.urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except OSError as err:
            errors.append(f"{url}: {err}")
            continue
        got = file_digest(part, "md5")
        if got == file.md5:
            part.replace(dest)
            return
        errors.append(f"{url}: MD5 {got}, expected {file.md5}")
    part.unlink(missing_ok=True)
    raise ConfigError(f"could not download {file.name} (dataset.download=true): " + "; ".join(errors)
                      + f". Download it by hand into {dest.parent}")
