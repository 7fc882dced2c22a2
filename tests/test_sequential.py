"""Sequential forget requests (forget=sequential): each selects from what is left, is unlearned from the model the
previous one left, and is judged against its own gold model."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.forget import by_class, random_sample, sequence
from mu_lightning.data.sources import synthetic
from mu_lightning.errors import ConfigError

TWO_CLASSES = ["forget=sequential", "forget.requests=[{kind:class,classes:[3]},{kind:class,classes:[5]}]",
               "unlearner=random_label", "callbacks.forget_retain=null",
               "protocol@unlearner=digits/random_label"]  # synthetic data gets the papers' values; these are tuned


def test_each_request_selects_from_what_the_earlier_ones_left():
    data = UnlearningDataModule(partial(synthetic, num_samples=300),
                                forget=[partial(random_sample, fraction=0.2, seed=0)] * 3)
    data.setup()
    first, second, third = (data.request(k).ids for k in range(3))
    train = set(first["train"].tolist())
    taken = [set(r["forget"].tolist()) for r in (first, second, third)]
    assert all(taken) and not (taken[0] & taken[1]) and not (taken[1] & taken[2]) and not (taken[0] & taken[2])
    # the same selector and seed draws 20% of a smaller set each time
    left = [len(train)]
    for t in taken[:2]:
        left.append(left[-1] - len(t))
    assert [len(t) for t in taken] == [round(0.2 * n) for n in left] and len(set(map(len, taken))) == 3
    assert set(third["forgotten"].tolist()) == taken[0] | taken[1] and len(first["forgotten"]) == 0
    for view, upto in ((first, 1), (second, 2), (third, 3)):
        assert set(view["retain"].tolist()) == train - set().union(*taken[:upto])
        assert torch.equal(view["test"], first["test"]) and torch.equal(view["train"], first["train"])
    assert data.ids is not None and torch.equal(data.ids["forget"], first["forget"])  # the module itself: request 1


def test_sequence_reads_each_kind_from_its_forget_config():
    selectors = sequence([{"kind": "class", "classes": [2]}, {"kind": "random", "fraction": 0.3}])
    assert selectors[0].func is by_class and selectors[0].keywords == {"classes": [2]}
    assert selectors[1].func is random_sample and selectors[1].keywords == {"fraction": 0.3, "count": None, "seed": 0}


@pytest.mark.parametrize("requests, message", [
    (None, r"forget=sequential needs forget.requests=\[...\]"),
    ([], r"forget=sequential needs forget.requests=\[...\]"),
    ([{"kind": "class", "classes": [1]}, {"kind": "clas"}],
     r"forget.requests\[1\]: kind='clas' is not a forget option; each request is \{kind: <one of class, entity, "
     r"indices, memorized, poisoned, random, subclass, subpopulation>"),
    ([{"classes": [1]}], r"forget.requests\[0\]: kind=None is not a forget option"),
    ([{"kind": "sequential"}], r"kind='sequential' is not a forget option"),
    ([{"kind": "random", "classes": [1]}],
     r"forget.requests\[0\]: \['classes'\] not settings of forget=random \(its settings: fraction, count, seed\)"),
    ([{"kind": "random", "_target_": "os.system"}], r"\['_target_'\] not settings of forget=random"),
])
def test_bad_requests_name_the_request_and_what_is_allowed(requests, message):
    with pytest.raises(ConfigError, match=message):
        sequence(requests)


def test_two_class_requests_each_against_its_own_gold(run_pipeline, tmp_path):
    res = run_pipeline(*TWO_CLASSES, "logger=csv")  # its own stage cache: every stage trains and logs
    first, second = res["requests"]
    # each request has its own gold, trained on what no request up to it has taken
    assert first["stages"]["gold"]["cache_key"] != second["stages"]["gold"]["cache_key"]
    assert first["stages"]["original"]["cache_key"] == second["stages"]["original"]["cache_key"]
    assert second["sizes"]["forgotten"] == first["sizes"]["forget"]
    assert second["sizes"]["retain"] == first["sizes"]["retain"] - second["sizes"]["forget"]
    assert second["stages"]["gold"]["samples"] == second["sizes"]["retain"]
    for request in (first, second):
        m = request["metrics"]
        assert m["original/forget_acc"] > 0.9 and m["gold/forget_acc"] == 0.0
        assert m["unlearn/forget_acc"] <= 0.1  # fell from the original's toward gold's
        assert m["unlearn/retain_acc"] >= m["gold/retain_acc"] - 0.05  # retain accuracy held
    # request 2 starts from request 1's M_u: class 3 stays forgotten (M itself still knows it)
    assert second["metrics"]["original/forgotten_acc"] > 0.9
    assert second["metrics"]["unlearn/forgotten_acc"] <= 0.1
    assert second["metrics"]["gold/forgotten_acc"] == 0.0
    assert "original/forgotten_acc" not in first["metrics"]
    # the run's own metrics are the final state's; ids and logs per request
    assert res["metrics"] == second["metrics"] and res["sizes"] == second["sizes"]
    out = tmp_path / "run"
    ids = [{int(i) for i in (out / f"forget_ids_{k}.txt").read_text().split()} for k in (1, 2)]
    assert [len(i) for i in ids] == [first["sizes"]["forget"], second["sizes"]["forget"]]
    assert {int(i) for i in (out / "forget_ids.txt").read_text().split()} == ids[0] | ids[1]
    logged = {p.parent.name for p in (out / "csv").glob("*/metrics.csv")}
    assert {"original", "gold_request1", "gold_request2", "unlearn_request1", "unlearn_request2"} <= logged


def test_one_request_writes_what_it_always_did(run_pipeline, tmp_path):
    res = run_pipeline("forget=sequential", "forget.requests=[{kind:class,classes:[3]}]", "unlearner=none",
                       "callbacks.forget_retain=null", shared_cache=True)
    assert "requests" not in res and res["sizes"]["forgotten"] == 0
    assert not list((tmp_path / "run").glob("forget_ids_*.txt"))


def test_a_random_request_that_empties_a_class_names_the_request(run_pipeline, tmp_path):
    with pytest.raises(ConfigError, match=r"forget request 2 of 2 removes every training sample of class\(es\)"):
        run_pipeline("forget=sequential", "forget.requests=[{kind:class,classes:[3]},{kind:random,fraction:0.99}]")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
