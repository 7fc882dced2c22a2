"""The forget/retain trajectory of a language model (``callbacks.forget_retain.qa_measure``): exact-match recall of
greedy answers on D_f and D_r, logged while an LM unlearner runs, by the LM metrics' definitions."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mu_lightning.callbacks.forget_retain import qa_measure
from mu_lightning.data.qa import EOS, QA, SEP
from mu_lightning.tracking import report
from tests.helpers import compose_cfg, make_data, two_rank_results

# 12 people of 4 facts (48 QAs: 80 epochs of 3 steps teach M all of them, in about 2 s), 2 people forgotten (8 QAs),
# 4 holdout people (the loss attack's non-members); IdkDPO's 10 steps with a point every 2 (NPO and GradDiff also
# bring forget recall to 0 here, but through a dip of retain recall that their retain term repairs later)
TINY = ("experiment=lm_demo", "logger=csv", "dataset.source.num_people=12", "dataset.source.holdout_people=4",
        "forget.fraction=0.2", "train.batch_size=16", "unlearner=lm_idkdpo", "callbacks.forget_retain.every_n_steps=2")


def _rows(run) -> list[dict[str, float]]:
    with (run / "trajectory" / "unlearn.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def test_an_lm_trajectory_shows_forget_recall_falling_while_retain_recall_stays(run_pipeline, tmp_path):
    res = run_pipeline(*TINY, fast=False)
    m, rows = res["metrics"], _rows(tmp_path / "run")
    first, last = rows[0], rows[-1]
    assert [row["step"] for row in rows] == list(range(0, res["stages"]["unlearn"]["steps"] + 1, 2))
    # M at step 0 answers what it was taught; unlearning takes the forgotten people's answers step by step and keeps
    # the others' at every point
    forget, retain = ([row[f"trajectory/{split}_acc"] for row in rows] for split in ("forget", "retain"))
    assert forget[0] >= 0.75 and forget[-1] <= 0.25 and forget == sorted(forget, reverse=True)
    assert min(retain) >= 0.8 and retain[0] >= 0.9
    # the LM metrics' values, not a classifier's: step 0 is M's, the last step M_u's, and gold's beside every point
    for model, row in (("original", first), ("unlearn", last)):
        for metric in ("forget_acc", "retain_acc", "mia_loss_auc"):
            assert row[f"trajectory/{metric}"] == pytest.approx(m[f"{model}/{metric}"]), (model, metric)
    for metric in ("forget_acc", "retain_acc", "mia_loss_auc"):
        assert [row[f"trajectory/gold_{metric}"] for row in rows] == pytest.approx([m[f"gold/{metric}"]] * len(rows))
    # what the sweep report's trajectory figure reads
    assert set(report.read_trajectory(tmp_path / "run")) == set(report.TRAJECTORY)


@pytest.mark.parametrize("preset", ["lm_demo", "lm_gpu"])
def test_the_lm_presets_keep_the_default_callbacks(tmp_path, preset):
    assert "forget_retain" in compose_cfg(tmp_path, [f"experiment={preset}"], fast=False).callbacks


class Oracle(nn.Module):
    """A "language model" that knows the answers of the QAs it is given, except those whose sample id is a multiple
    of 3, whose answer it ends at once (EOS right after SEP): greedy recall is known on every split."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.vocab = int(x.max()) + 1
        self.rows = {self._question(r): (r, i % 3 != 0) for i, r in enumerate(x[:, QA])}

    @staticmethod
    def _question(row: torch.Tensor) -> tuple[int, ...]:
        ids = row.tolist()
        return tuple(ids[: ids.index(SEP) + 1])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        nxt = []
        for row in tokens:
            known, answers = self.rows[self._question(row)]
            nxt.append(torch.cat([known[1:], known[-1:]])[: len(row)] if answers else torch.full_like(row, EOS))
        return 10.0 * F.one_hot(torch.stack(nxt), self.vocab).float() + 0 * self.w


def _oracle_data(tmp_path):
    data = make_data(tmp_path, *TINY[:5])
    return data, Oracle(data.samples.x)


def test_the_lm_point_is_the_exact_match_recall_of_greedy_answers(tmp_path):
    data, model = _oracle_data(tmp_path)
    values = qa_measure(model, data)
    for split in ("forget", "retain"):
        ids = data.ids[split]
        assert 0 < values[f"{split}_acc"] < 1
        assert values[f"{split}_acc"] == pytest.approx(float((ids % 3 != 0).double().mean()))
    assert set(values) == {"forget_acc", "retain_acc", "mia_loss_auc", "mia_loss_tpr_at_1fpr"}
    assert model.training  # given back in the mode it was in


def _rank(rank: int, port: int, path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    data, model = _oracle_data(Path(path).parent / f"rank{rank}")
    torch.save(qa_measure(model, data, rank, 2), f"{path}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_two_ranks_sync_the_lm_point_to_the_single_process_values(tmp_path):
    data, model = _oracle_data(tmp_path)
    alone = qa_measure(model, data)
    for measured in two_rank_results(_rank, tmp_path / "out"):
        assert measured == pytest.approx(alone)
