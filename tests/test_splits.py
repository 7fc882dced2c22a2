"""Splits are disjoint, cover what they should, and are the same for the same seeds."""

from __future__ import annotations

import torch

from tests.helpers import make_data


def test_splits_disjoint_and_complete(tmp_path):
    data = make_data(tmp_path)  # digits, random 10%
    ids = {k: set(v.tolist()) for k, v in data.ids.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert ids["train"] | ids["val"] | ids["test"] == set(range(1797))
    assert ids["forget"] | ids["retain"] == ids["train"] and not ids["forget"] & ids["retain"]
    assert len(ids["test"]) == round(0.2 * 1797) and len(ids["forget"]) == round(0.1 * len(ids["train"]))


def test_splits_deterministic_and_seeds_independent(tmp_path):
    a, b = make_data(tmp_path), make_data(tmp_path)
    assert all(torch.equal(a.ids[k], b.ids[k]) for k in a.ids)
    other_forget = make_data(tmp_path, "forget.seed=1")
    assert torch.equal(other_forget.ids["train"], a.ids["train"])  # forget.seed moves only the request
    assert not torch.equal(other_forget.ids["forget"], a.ids["forget"])
    other_split = make_data(tmp_path, "dataset.split_seed=1")
    assert not torch.equal(other_split.ids["test"], a.ids["test"])
    training_seed = make_data(tmp_path, "seed=5")  # the training seed changes no split
    assert all(torch.equal(training_seed.ids[k], a.ids[k]) for k in a.ids)


def test_class_request_takes_exactly_the_class(tmp_path):
    data = make_data(tmp_path, "forget=class", "forget.classes=[3,7]")
    y = data.samples.y
    assert set(y[data.ids["forget"]].tolist()) == {3, 7}
    assert not torch.isin(y[data.ids["retain"]], torch.tensor([3, 7])).any()
    assert data.forgotten_classes() == [3, 7]
