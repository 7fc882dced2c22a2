"""Models made elsewhere (docs/checkpoints.md): original.checkpoint replaces M's training and gives the metrics of
the run that trained it; a checkpoint that does not fit, or a model without the head a method reads, is a
ConfigError with exit code 2 before anything is trained or written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mu_lightning.api import load_weights
from mu_lightning.errors import ConfigError
from mu_lightning.files import file_digest
from mu_lightning.models import MLP

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=3", "logger=none"]


class NoLinearHead(nn.Module):
    """A classifier whose head is a bare weight matrix: no nn.Linear for Fisher or Boundary Expand to read."""

    def __init__(self, input_shape: list[int], num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(int(torch.tensor(input_shape).prod()), num_classes))

    def forward(self, x):
        return x.flatten(1) @ self.weight


class TwoPart(nn.Module):
    """Your own architecture: a body and a linear head, not an nn.Sequential."""

    def __init__(self, input_shape: list[int], num_classes: int, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def train(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, "train.py", *SMALL, *args, f"paths.cache_dir={tmp_path / 'cache'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**__import__("os").environ, **(env or {})})


def test_a_run_from_original_checkpoint_trains_no_original_and_gives_the_same_metrics(run_pipeline, tmp_path):
    first = run_pipeline("unlearner=finetune", out="first")
    trained = tmp_path / "cache" / f"original-{first['stages']['original']['cache_key']}.pt"
    lightning_style = tmp_path / "m.ckpt"  # as a LightningModule holding the network as ``model`` saves it
    torch.save({"state_dict": {f"model.{k}": v for k, v in torch.load(trained, weights_only=True).items()},
                "epoch": 3}, lightning_style)
    again = run_pipeline("unlearner=finetune", f"original.checkpoint={lightning_style}", out="again")
    facts = again["stages"]["original"]
    assert facts["source"] == "checkpoint" and facts["sha256"] == file_digest(lightning_style)
    assert facts["checkpoint"] == str(lightning_style) and not facts["cache_hit"]
    assert len(list((tmp_path / "cache").glob("original-*.pt"))) == 1  # no original trained the second time
    assert again["stages"]["gold"]["cache_key"] == first["stages"]["gold"]["cache_key"]  # gold does not depend on M
    assert again["metrics"]["original/train_seconds"] is None
    differ = {k for k, v in again["metrics"].items() if v != first["metrics"][k]}
    assert differ and all("seconds" in k or "speedup" in k or again["metrics"][k] is None for k in differ), differ


def test_load_weights_names_the_first_mismatches(tmp_path):
    model = MLP([1, 8, 8], 10, hidden=[16])
    state = model.state_dict()
    state["extra.bias"] = torch.zeros(3)
    state["1.weight"] = torch.zeros(16, 32)
    del state["3.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ConfigError) as err:
        load_weights(MLP([1, 8, 8], 10, hidden=[16]), tmp_path / "bad.pt", "original.checkpoint")
    assert str(err.value) == (f"original.checkpoint={tmp_path / 'bad.pt'} does not fit model=MLP: missing keys 3.bias; "
                              "unexpected keys extra.bias; 1.weight has shape [16, 32] in the checkpoint but [16, 64] "
                              "in the model")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"is not a checkpoint torch.load\(weights_only=True\) can read"):
        load_weights(model, tmp_path / "junk.pt", "gold.checkpoint")


def test_a_mismatched_checkpoint_exits_2_before_anything_is_written(tmp_path):
    torch.save(MLP([1, 8, 8], 10, hidden=[32]).state_dict(), tmp_path / "other.pt")
    out = train(tmp_path, f"original.checkpoint={tmp_path / 'other.pt'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "original.checkpoint=" in out.stderr + out.stdout and "has shape [32, 64] in the checkpoint but [128, 64]" \
        in out.stderr + out.stdout
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "run").glob("*.txt"))
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_model_without_a_linear_head_exits_2_for_a_method_that_reads_it(tmp_path):
    target = f"{__name__}.NoLinearHead"
    out = train(tmp_path, "unlearner=fisher", f"model._target_={target}", "~model.hidden",
                env={"MU_LIGHTNING_ALLOW": target})
    assert out.returncode == 2, out.stderr[-2000:]
    assert ("unlearner=Fisher reads the classifier head, the model's last nn.Linear with dataset.num_classes=10 "
            "outputs, but in model=NoLinearHead it has no nn.Linear") in out.stderr + out.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "results.json").exists()


def test_your_own_architecture_runs_a_method_that_reads_the_head(run_pipeline, monkeypatch):
    target = f"{__name__}.TwoPart"
    monkeypatch.setenv("MU_LIGHTNING_ALLOW", target)
    results = run_pipeline("unlearner=boundary_expand", f"model._target_={target}", "~model.hidden", "+model.width=8")
    assert results["stages"]["unlearn"]["steps"] > 0
    assert json.dumps(results["config"]["model"]) == json.dumps({"_target_": target, "input_shape": [1, 8, 8],
                                                                 "num_classes": 10, "width": 8})
