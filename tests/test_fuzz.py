"""Fuzz-style: a seeded generator draws a few dozen bad overrides, damaged input files, forbidden resolvers,
``hydra.job.env_set`` entries and launcher strings, and bad ``eval.py run_dir=`` calls, and each goes through
``python train.py`` (or ``eval.py``) as a user would run it. Every one must end with exit code 1 or 2 and one short
message without a Python traceback, run no payload, and leave no results.json and no stage-cache entry (slow tier: one
process per case). Damaged, foreign and booby-trapped resume checkpoints are drawn the same way, in-process."""

from __future__ import annotations

import gzip
import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = ["dataset=synthetic", "dataset.source.num_samples=300", "logger=none", "unlearner=none", "train.epochs=2"]
CASES = 60
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


RESOLVERS = ["oc.decode", "oc.create", "oc.env", "oc.deprecated", "python_eval", "oc.dict.keyz"]
PLACES = ["+model.x", "tags", "+hydra.callbacks.x", "+hydra.job.env_set.OMP_NUM_THREADS", "+dataset.source.x"]
ENV_SET = [("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1"), ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0"), ("WANDB_MODE", "online"),
           ("WANDB_BASE_URL", "https://x.example"), ("WANDB_API_KEY", "k"), ("LD_PRELOAD", "/x.so"),
           ("PYTHONSTARTUP", "/x.py"), ("OMP_NUM_THREADS", "'2;id'"), ("CUDA_VISIBLE_DEVICES", "'0|id'")]
LAUNCHER = ["partition", "account", "qos", "comment", "constraint", "additional_parameters.x"]
SHELL = [";", "|", "&", "$(id)", "`id`", "\\n", ">", "<", "'", "\\"]


def _resolver(rng: random.Random, tmp: Path) -> list[str]:
    payload = f"{{_target_: builtins.open, file: {tmp.parent / 'marker'}, mode: w}}"
    return [*BASE, f'{rng.choice(PLACES)}="${{{rng.choice(RESOLVERS)}:\'{payload}\'}}"']


def _env_set(rng: random.Random, tmp: Path) -> list[str]:
    name, value = rng.choice(ENV_SET)
    return [*BASE, f"+hydra.job.env_set.{name}={value}"]


def _launcher(rng: random.Random, tmp: Path) -> list[str]:
    option, char = rng.choice(LAUNCHER), rng.choice(SHELL)
    value = f"gpu{char}touch {tmp.parent / 'marker'}".replace("'", "\\'")
    return [*BASE, "hydra/launcher=slurm", f"++hydra.launcher.{option}='{value}'"]


def _eval(rng: random.Random, tmp: Path) -> list[str]:
    """eval.py on a run directory that is not one, mixes files, or with an override it refuses."""
    run = tmp.parent / "evalrun"
    run.mkdir(parents=True, exist_ok=True)
    kind = rng.choice(["garbage", "no_config", "mixed", "seed", "trainer", "into_run", "no_weights"])
    record = {"config": {"paths": {"output_dir": str(run)}, "trainer": {}}, "files": {"unlearned.pt": "0" * 64}}
    (run / "results.json").write_text("{not json" if kind == "garbage" else "{}" if kind == "no_config"
                                      else json.dumps(record))
    if kind != "no_weights":
        (run / "unlearned.pt").write_bytes(bytes(rng.randrange(256) for _ in range(32)))
    extra = {"seed": ["seed=3"], "trainer": ["+trainer.max_steps=3"], "into_run": [f"hydra.run.dir={run}"]}
    return ["eval.py", f"run_dir={run}", "logger=none", *extra.get(kind, [])]


MAKERS = (_override, _ids_file, _tensor_file, _mnist_dir, _resolver, _env_set, _launcher, _eval)


def generated_cases(seed: int = 17, n: int = CASES) -> list[tuple[str, ...]]:
    """``n`` bad command lines (tuples of overrides; file cases name a ``{tmp}`` path) from a seeded generator."""
    rng, cases = random.Random(seed), []
    for k in range(n):
        make = rng.choices(MAKERS, weights=[5, 2, 2, 1, 2, 2, 1, 2])[0]
        tmp = Path("{tmp}") / f"case{k}"
        cases.append((make.__name__, str(rng.random()), str(tmp)))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("case", generated_cases(), ids=lambda c: f"{c[0]}-{c[2].rsplit('case', 1)[1]}")
def test_a_bad_input_ends_in_one_message(tmp_path, case):
    maker, draw, _ = case
    make = {f.__name__: f for f in MAKERS}[maker]
    (tmp_path / "case").mkdir()
    args = make(random.Random(draw), tmp_path / "case")
    script, args = (args[0], args[1:]) if args[0] == "eval.py" else ("train.py", args)
    cache = tmp_path / "cache"
    run_dir = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={tmp_path / 'run'}"]
    out = subprocess.run([sys.executable, script, *args, f"paths.cache_dir={cache}", *run_dir], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert not (tmp_path / "marker").exists(), f"{args}: the payload ran\n{text[-3000:]}"
    assert out.returncode in (1, 2), f"{args}: exit {out.returncode}\n{text[-3000:]}"
    assert "Traceback" not in text and 'File "' not in text, f"{args}:\n{text[-3000:]}"
    errors = [line for line in text.splitlines() if "error" in line.lower() or "Could not" in line]
    assert errors, f"{args}: no message\n{text[-3000:]}"
    assert not (tmp_path / "run" / "results.json").exists()
    assert not list(cache.glob("*.json")) and not list(cache.glob("*.pt"))


class _Payload:
    """Unpickling it would create ``marker``: a planted checkpoint must never be unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _damaged_checkpoint(rng: random.Random, path: Path, good: dict) -> str:
    import torch

    kind = rng.choice(["bytes", "truncated", "other_entry", "no_record", "nan", "payload", "empty", "not_a_dict"])
    if kind == "bytes":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        saved = {"other_entry": {**good, "mu_lightning": {**good["mu_lightning"], "bound": "original-0000"}},
                 "no_record": {k: v for k, v in good.items() if k != "mu_lightning"},
                 "nan": {**good, "state_dict": {k: v * float("nan") for k, v in good["state_dict"].items()}},
                 "payload": {**good, "extra": _Payload(path.parent / "marker")},
                 "truncated": good, "not_a_dict": [1, 2, 3]}[kind]
        torch.save(saved, path)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[: rng.randrange(1, path.stat().st_size)])
    return kind


def test_a_damaged_or_foreign_resume_checkpoint_is_never_resumed_from(tmp_path, caplog):
    """Seeded: each damaged, foreign or booby-trapped resume checkpoint is removed with a warning naming it."""
    import torch
    from hydra.utils import instantiate

    from mu_lightning.stages.classifier import resumable
    from tests.helpers import compose_cfg

    cfg = compose_cfg(tmp_path, ["train.checkpoint_every=2"])
    module = instantiate(cfg.train, model=instantiate(cfg.model))
    work = tmp_path / "work" / "gold-1234"
    work.mkdir(parents=True)
    good = {"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}, "epoch": 1,
            "mu_lightning": {"bound": work.name, "cost": {"flops": 1, "grad_evals": 1, "seconds": 0.1}}}
    rng = random.Random(24)
    for _ in range(16):
        kind = _damaged_checkpoint(rng, work / "last.ckpt", good)
        caplog.clear()
        with caplog.at_level("WARNING"):
            _, resume_from = resumable(module, work)
        assert resume_from is None and not (work / "last.ckpt").exists(), kind
        assert f"resume checkpoint {work / 'last.ckpt'} is not used" in caplog.text, kind
        assert not (work / "marker").exists(), kind
    torch.save(good, work / "last.ckpt")
    assert resumable(module, work)[1] == str(work / "last.ckpt")
