"""A new method, metric and dataset added exactly as their checklists say (docs/methods.md "Adding a method",
docs/metrics.md §10, docs/datasets.md "Adding a dataset"), in a copy of the repository: the tests that guard each
step point to the checklist when a step is missing, and pass with nothing but the listed steps done. The toy files
are in tests/contrib/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRIB = ROOT / "tests" / "contrib"
IGNORED = (".git", ".venv*", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "wandb")
TOP_IGNORED = ("outputs", "data")  # run outputs and downloaded datasets at the top (not mu_lightning/data)
METRIC = '''"""Toy metric: mean cross-entropy on a split (the metric procedure's test)."""

import torch
import torch.nn.functional as F


def mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), labels))
'''
METRIC_TEST = '''

def test_toy_forget_loss_by_hand():
    from mu_lightning.metrics.toy import mean_loss

    assert mean_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])) == pytest.approx(math.log(2))
'''
DATASET_TEST = '''

def test_toy_blobs_are_seeded_three_classes():
    from mu_lightning.data.toy_blobs import toy_blobs

    a, b = toy_blobs(seed=1), toy_blobs(seed=1)
    assert torch.equal(a.x, b.x) and a.x.shape == (600, 4) and set(a.y.tolist()) == {0, 1, 2}
'''


def edit(path: Path, after: str, text: str) -> None:
    body = path.read_text()
    assert after in body, f"{path.name} no longer holds {after!r}: update this test"
    path.write_text(body.replace(after, after + text, 1))


def run(copy: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=600)


def pytest_in(copy: Path, *args: str) -> subprocess.CompletedProcess:
    return run(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The repository without its environment, run from source (``mu_lightning.conf`` is ``conf/`` as installed)."""
    repo = tmp_path_factory.mktemp("contrib") / "repo"
    patterns = shutil.ignore_patterns(*IGNORED)
    shutil.copytree(ROOT, repo, ignore=lambda d, names: patterns(d, names) | (
        {n for n in names if n in TOP_IGNORED} if Path(d) == ROOT else set()))
    (repo / "mu_lightning" / "conf").symlink_to(repo / "conf", target_is_directory=True)
    found = run(repo, "-c", "import mu_lightning.data, mu_lightning.unlearners as u; print(u.__file__, "
                            "mu_lightning.data.__file__)")
    assert all(f.startswith(str(repo)) for f in found.stdout.split()), found.stdout + found.stderr
    return repo


@pytest.mark.slow
def test_a_method_is_its_file_its_config_and_one_test_row(copy):
    shutil.copy(CONTRIB / "toy_ascent.py", copy / "mu_lightning" / "unlearners")
    shutil.copy(CONTRIB / "toy_ascent.yaml", copy / "conf" / "unlearner")
    missing = pytest_in(copy, "tests/test_unlearners.py::test_every_config_has_an_entry")
    assert missing.returncode == 1 and 'docs/methods.md, "Adding a method"' in missing.stdout
    edit(copy / "tests" / "test_unlearners.py", "CATALOGUE: dict[str, Spec] = {\n",
         '    "toy_ascent": Spec("training", ("forget",), random=ONE_EPOCH),\n')
    done = pytest_in(copy, "tests/test_unlearner_registry.py", "tests/test_unlearners.py", "tests/test_report.py",
                     "tests/test_layers.py", "tests/test_search_spaces.py",
                     "-k", "toy_ascent or entry or registry or catalogue or config or layer")
    assert done.returncode == 0, done.stdout[-3000:]
    trained = run(copy, "train.py", "unlearner=toy_ascent", "logger=none", "train.epochs=3",
                  "extras.print_config=false", f"hydra.run.dir={copy}/outputs/toy",
                  f"paths.cache_dir={copy}/outputs/cache")
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((copy / "outputs" / "toy" / "results.json").read_text())
    assert results["protocol"] == "general" and results["values_from"] == ["conf/unlearner/toy_ascent.yaml"]
    assert "no values for unlearner=toy_ascent" in (copy / "outputs" / "toy" / "train.log").read_text()


@pytest.mark.slow
def test_a_metric_and_a_dataset_along_their_procedures(copy):
    (copy / "mu_lightning" / "metrics" / "toy.py").write_text(METRIC)
    edit(copy / "mu_lightning" / "metrics" / "fast.py", "from mu_lightning.metrics.accuracy import accuracy\n",
         "from mu_lightning.metrics.toy import mean_loss\n")
    edit(copy / "mu_lightning" / "metrics" / "fast.py",
         'out.update({f"{m}/{s}_acc": accuracy(ctx.logits(m, s), ctx.labels(s)) for s in splits})\n',
         '        out[f"{m}/toy_forget_loss"] = mean_loss(ctx.logits(m, "forget"), ctx.labels("forget"))\n')
    undocumented = pytest_in(copy, "tests/test_procedures.py", "-k", "metric_table")
    assert undocumented.returncode == 1 and "docs/metrics.md §10" in undocumented.stdout
    edit(copy / "docs" / "metrics.md", "|---|---|---|---|\n",
         "| `toy_forget_loss` | mean cross-entropy on D_f | closer to gold | — |\n")
    (copy / "tests" / "test_metrics.py").write_text((copy / "tests" / "test_metrics.py").read_text() + METRIC_TEST)

    shutil.copy(CONTRIB / "toy_blobs.py", copy / "mu_lightning" / "data")
    shutil.copy(CONTRIB / "toy_blobs.yaml", copy / "conf" / "dataset")
    unlisted = pytest_in(copy, "tests/test_procedures.py", "-k", "toy_blobs")
    assert unlisted.returncode == 1 and 'docs/datasets.md, "Adding a dataset"' in unlisted.stdout
    edit(copy / "docs" / "datasets.md", "|---|---|---|\n", "| `toy_blobs` | 600 × 4, 3 classes, seeded | — |\n")
    (copy / "tests" / "test_datasets.py").write_text((copy / "tests" / "test_datasets.py").read_text() + DATASET_TEST)

    done = pytest_in(copy, "tests/test_procedures.py", "tests/test_metrics.py", "tests/test_datasets.py",
                     "tests/test_docs.py", "-k", "toy or procedure or metric_table or docs")
    assert done.returncode == 0, done.stdout[-3000:]
    trained = run(copy, "train.py", "dataset=toy_blobs", "unlearner=finetune", "logger=none", "train.epochs=3",
                  "extras.print_config=false", f"hydra.run.dir={copy}/outputs/blobs",
                  f"paths.cache_dir={copy}/outputs/cache")
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((copy / "outputs" / "blobs" / "results.json").read_text())["metrics"]
    assert {f"{m}/toy_forget_loss" for m in ("original", "gold", "unlearn")} <= set(metrics)
