"""The Python API (mu_lightning/api.py, docs/api.md): the documented example runs, and the API gives the numbers of
the command line on the same models, since both go through the same cores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import mu_lightning
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import CACHE
from mu_lightning.pipeline import _build_model, build_data, run
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S).group(1)
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert re.search(r"SCRUB: \d+ steps", out)
    values = dict(re.findall(r"^(\S+/\S+)\s+(\S+)$", out, re.M))
    assert set(values) == {"original/forget_acc", "gold/forget_acc", "unlearn/forget_acc", "unlearn/test_acc",
                           "unlearn/avg_gap"}
    assert all(0 <= float(v) <= 1 for k, v in values.items() if k.endswith("_acc"))


def test_the_api_reproduces_a_run_of_the_command_line(tmp_path):
    """unlearn() on the run's M gives the run's M_u bit for bit; evaluate() on its three models its metrics."""
    cfg = compose_cfg(tmp_path, ["unlearner=finetune", "save_unlearned=true", "train.epochs=4"])
    run(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    data = build_data(cfg)
    models = {}
    for stage in ("original", "gold"):
        models[stage] = _build_model(cfg)
        models[stage].load_state_dict(torch.load(tmp_path / "cache" / f"{stage}-{results['stages'][stage]['cache_key']}"
                                                 ".pt", weights_only=True))
    unlearned, facts = mu_lightning.unlearn(models["original"], forget=data.tensors("forget"),
                                            retain=data.tensors("retain"), method="finetune", seed=cfg.unlearn_seed)
    saved = torch.load(tmp_path / "run" / "unlearned.pt", weights_only=True)
    assert facts["steps"] == results["stages"]["unlearn"]["steps"]
    assert all(torch.equal(saved[k], v) for k, v in unlearned.state_dict().items())

    CACHE.clear()  # computed afresh, not the run's memoised numbers
    parts = {s: data.tensors(s) for s in ("forget", "retain", "val", "test")}
    metrics = mu_lightning.evaluate(original=models["original"], unlearned=unlearned, gold=models["gold"], data=parts)
    assert set(metrics) == set(results["metrics"])
    known = {k: v for k, v in metrics.items() if v is not None}
    assert "unlearn/avg_gap" in known and "unlearn/train_seconds" not in known  # no seconds given: unknown
    assert known == {k: results["metrics"][k] for k in known}


def test_unknown_method_and_option_are_config_errors():
    net = torch.nn.Linear(4, 2)
    part = (torch.randn(6, 4), torch.tensor([0, 1] * 3))
    with pytest.raises(ConfigError, match="method='finetun' is not a registered unlearner"):
        mu_lightning.unlearn(net, forget=part, retain=part, method="finetun")
    with pytest.raises(ConfigError, match=r"unlearner.lr is not an option of Finetune"):
        mu_lightning.unlearn(net, forget=part, retain=part, method="finetune", lr=0.1)


def test_a_flop_limit_stops_the_method_before_the_step_that_would_cross_it():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    part = (torch.randn(64, 4), torch.arange(64) % 2)
    _, free = mu_lightning.unlearn(net, forget=part, retain=part, method="finetune", epochs=2, batch_size=8)
    per_step = free["flops"] // free["steps"]
    unlearned, facts = mu_lightning.unlearn(net, forget=part, retain=part, method="finetune", epochs=2, batch_size=8,
                                            flop_limit=3 * per_step + per_step // 2)
    budget = facts["budget"]
    assert free["steps"] == 16 and facts["steps"] == 3 and budget["stopped_at_step"] == 3
    assert budget["flops_spent"] == facts["flops"] == 3 * per_step <= budget["flops_limit"]
    assert budget["exhausted"] and budget["spent_fraction"] is None and "budget" not in free
    for bad in (0, -5, 1.5, True, "lots"):
        with pytest.raises(ConfigError, match=rf"flop_limit={bad!r} is not allowed: give a whole number of FLOPs"):
            mu_lightning.unlearn(net, forget=part, retain=part, flop_limit=bad)


def test_loaders_are_accepted_like_tensors():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
    from mu_lightning.api import TensorData

    data = TensorData(forget=loader, retain=(x, y))
    data.setup()
    assert torch.equal(data.tensors("forget")[0], x) and data.ids["retain"].tolist() == list(range(10, 20))
