"""The forget/retain callback: a trajectory every N steps, same names and values as the final evaluation, DDP sync."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from mu_lightning.callbacks import StageMonitor
from mu_lightning.callbacks.forget_retain import ForgetRetainCallback
from mu_lightning.errors import ConfigError
from mu_lightning.metrics import mia
from tests.helpers import two_rank_results

METRICS = ("forget_acc", "retain_acc", "mia_loss_auc", "mia_loss_tpr_at_1fpr")


def test_trajectory_every_n_steps_from_m_to_the_final_values_with_gold_beside(run_pipeline, tmp_path):
    res = run_pipeline("logger=csv", "callbacks.forget_retain.every_n_steps=10", shared_cache=True)
    m, steps = res["metrics"], res["stages"]["unlearn"]["steps"]
    with open(tmp_path / "run" / "csv" / "unlearn" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("trajectory/forget_acc")]
    logged = {int(r["step"]): r for r in rows}
    assert len(rows) == len(logged)  # each point once: the last one too
    assert sorted(logged) == sorted({*range(0, steps + 1, 10), steps})
    assert float(logged[0]["trajectory/forget_acc"]) == pytest.approx(m["original/forget_acc"])  # step 0 is M
    assert float(logged[0]["trajectory/retain_acc"]) == pytest.approx(m["original/retain_acc"])
    for metric in METRICS:  # the last point is the final evaluation's value; gold's is the same at every point
        assert float(logged[steps][f"trajectory/{metric}"]) == pytest.approx(m[f"unlearn/{metric}"])
        (gold,) = {float(r[f"trajectory/gold_{metric}"]) for r in rows}
        assert gold == pytest.approx(m[f"gold/{metric}"])


def test_every_n_steps_must_be_positive():
    with pytest.raises(ConfigError, match="every_n_steps=0"):
        ForgetRetainCallback(every_n_steps=0)


def _attached() -> tuple[ForgetRetainCallback, torch.nn.Module]:
    """A callback attached to a datamodule stand-in (only ``tensors(split)`` is read) and the model it measures."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 4, generator=gen), torch.randint(0, 3, (90,), generator=gen)
    split = {"forget": slice(0, 21), "retain": slice(21, 70), "test": slice(70, 90)}
    callback = ForgetRetainCallback()
    callback.attach(SimpleNamespace(tensors=lambda s: (x[split[s]], y[split[s]])))
    torch.manual_seed(0)
    return callback, torch.nn.Linear(4, 3)


def _rank(rank: int, port: int, path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    callback, model = _attached()
    values = callback.measure(model, rank, 2)
    torch.save({k: float(v) for k, v in values.items()}, f"{path}.{rank}")
    dist.destroy_process_group()


def test_is_a_stage_monitor_with_a_step_cadence_and_the_attached_data():
    callback, _ = _attached()
    assert isinstance(callback, StageMonitor)
    assert ForgetRetainCallback(every_n_steps=7).step_cadence == 7 and callback.seconds == 0.0
    assert callback.data is not None and ForgetRetainCallback().data is None


def test_loss_auc_is_the_evaluations_definition():
    """The trajectory's ``mia_loss_auc`` is ``metrics.mia.loss_attack`` on all of D_f and D_test, as the evaluation."""
    callback, model = _attached()
    (xf, yf), (xt, yt) = callback.data.tensors("forget"), callback.data.tensors("test")
    roc = mia.loss_attack(model(xf).detach(), yf, model(xt).detach(), yt)
    assert callback.measure(model)["mia_loss_auc"] == pytest.approx(roc["auc"])


@pytest.mark.slow
def test_two_ranks_sync_to_the_single_process_values(tmp_path):
    callback, model = _attached()
    alone = {k: float(v) for k, v in callback.measure(model).items()}
    for measured in two_rank_results(_rank, tmp_path / "out"):
        assert measured == pytest.approx(alone)
