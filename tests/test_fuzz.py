"""Fuzz-style: a seeded generator draws a few dozen bad overrides and damaged input files, and each goes through
``python train.py`` as a user would run it. Every one must end with exit code 1 or 2 and one short message without
a Python traceback, and leave no results.json and no stage-cache entry (slow tier: one process per case)."""

from __future__ import annotations

import gzip
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = ["dataset=synthetic", "dataset.source.num_samples=300", "logger=none", "unlearner=none", "train.epochs=2"]
CASES = 36
NUMERIC = ["train.optimizer.lr", "train.epochs", "train.batch_size", "unlearner.optimizer.lr", "unlearner.batch_size",
           "unlearner.epochs", "seed", "unlearn_seed", "dataset.split_seed", "forget.fraction", "forget.seed",
           "train.optimizer.momentum", "train.optimizer.weight_decay", "dataset.test_fraction"]
NOT_A_NUMBER = ["nan", "inf", "-inf", "abc", "[1,2]", "{a:1}", "''"]
BAD_FOR = {"train.epochs": ["-1", "2.5"], "train.batch_size": ["0", "1.5"], "seed": ["-1", "4294967296"],
           "train.optimizer.lr": ["0", "-0.1"], "forget.fraction": ["0", "1.5"], "dataset.test_fraction": ["0", "1"]}
TRAINER = ["+trainer.max_epochs=3", "+trainer.bogus=1", "+trainer.logger=true", "trainer.precision=13"]


def _ids_file(rng: random.Random, tmp: Path) -> list[str]:
    kind = rng.choice(["bytes", "latin1", "arabic", "duplicates", "far", "negative", "empty", "words"])
    content = {"bytes": bytes(rng.randrange(256) for _ in range(64)), "latin1": "1\n\xe9\n".encode("latin-1"),
               "arabic": "١\n".encode(), "duplicates": b"3\n5\n3\n", "far": b"99999\n", "negative": b"-4\n",
               "empty": b"\n\n", "words": b"1\ntwo\n"}[kind]
    path = tmp / f"ids_{kind}.txt"
    path.write_bytes(content)
    return ["forget=indices", f"forget.path={path}"]


def _tensor_file(rng: random.Random, tmp: Path) -> list[str]:
    kind = rng.choice(["truncated", "nan", "short_y", "garbage_npz", "garbage_pt", "float_y"])
    x, y = np.random.default_rng(0).random((40, 1, 2, 2)), np.arange(40) % 2
    path = tmp / f"data_{kind}.{'pt' if kind == 'garbage_pt' else 'npz'}"
    if kind in ("garbage_npz", "garbage_pt"):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(200)))
    else:
        arrays = {"x": x, "y": y[:-3] if kind == "short_y" else y.astype(float) if kind == "float_y" else y}
        if kind == "nan":
            arrays["x"][5, 0, 0, 0] = np.nan
        np.savez(path, **arrays)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["dataset=tensor_file", f"dataset.path={path}", "dataset.input_shape=[1,2,2]", "dataset.num_classes=2",
            *BASE[2:]]


def _mnist_dir(rng: random.Random, tmp: Path) -> list[str]:
    kind = rng.choice(["300_250", "labels_12", "cut_header", "not_gzip"])
    root = tmp / f"mnist_{kind}"
    root.mkdir()
    sizes = {"train-images-idx3-ubyte.gz": (30, 28, 28), "train-labels-idx1-ubyte.gz": (25 if kind == "300_250"
             else 30,), "t10k-images-idx3-ubyte.gz": (10, 28, 28), "t10k-labels-idx1-ubyte.gz": (10,)}
    for name, shape in sizes.items():
        data = np.full(shape, 12 if kind == "labels_12" and len(shape) == 1 else 1, np.uint8)
        header = struct.pack(">BBBB", 0, 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
        raw = header[:6] if kind == "cut_header" and name.startswith("t10k-images") else header + data.tobytes()
        if kind == "not_gzip" and name.startswith("train-labels"):
            (root / name).write_bytes(raw)
        else:
            with gzip.open(root / name, "wb") as f:
                f.write(raw)
    return ["dataset=mnist", f"dataset.data_dir={root}", "model=mlp", *BASE[2:]]


def _override(rng: random.Random, tmp: Path) -> list[str]:
    if rng.random() < 0.2:
        return [*BASE, rng.choice(TRAINER)]
    key = rng.choice(NUMERIC)
    return [*BASE, f"{key}={rng.choice(NOT_A_NUMBER + BAD_FOR.get(key, []))}"]


def generated_cases(seed: int = 17, n: int = CASES) -> list[tuple[str, ...]]:
    """``n`` bad command lines (tuples of overrides; file cases name a ``{tmp}`` path) from a seeded generator."""
    rng, cases = random.Random(seed), []
    for k in range(n):
        make = rng.choices([_override, _ids_file, _tensor_file, _mnist_dir], weights=[5, 2, 2, 1])[0]
        tmp = Path("{tmp}") / f"case{k}"
        cases.append((make.__name__, str(rng.random()), str(tmp)))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("case", generated_cases(), ids=lambda c: f"{c[0]}-{c[2].rsplit('case', 1)[1]}")
def test_a_bad_input_ends_in_one_message(tmp_path, case):
    maker, draw, _ = case
    make = {f.__name__: f for f in (_override, _ids_file, _tensor_file, _mnist_dir)}[maker]
    args = make(random.Random(draw), tmp_path)
    cache = tmp_path / "cache"
    out = subprocess.run([sys.executable, "train.py", *args, f"paths.cache_dir={cache}",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode in (1, 2), f"{args}: exit {out.returncode}\n{text[-3000:]}"
    assert "Traceback" not in text and 'File "' not in text, f"{args}:\n{text[-3000:]}"
    errors = [line for line in text.splitlines() if "error" in line.lower() or "Could not" in line]
    assert errors, f"{args}: no message\n{text[-3000:]}"
    assert not (tmp_path / "run" / "results.json").exists()
    assert not list(cache.glob("*.json")) and not list(cache.glob("*.pt"))
