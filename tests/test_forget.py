"""Forget requests select exactly the samples they promise: entity-level and sub-class requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mu_lightning.data.forget import by_entity, by_subclass
from mu_lightning.errors import ConfigError
from tests.helpers import make_data

IDS = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17])
LABELS = torch.zeros(8, dtype=torch.int64)
GROUPS = torch.tensor([5, 2, 5, 9, 2, 7, 5, 9])   # entity of each id above
FINE = torch.tensor([0, 3, 1, 3, 0, 2, 3, 1])


def test_entity_request_by_ids_takes_all_their_samples():
    assert by_entity(IDS, LABELS, groups=GROUPS, entities=[5]).tolist() == [10, 12, 16]
    assert by_entity(IDS, LABELS, groups=GROUPS, entities=[9, 2]).tolist() == [11, 13, 14, 17]
    assert by_entity(IDS, LABELS, groups=GROUPS, entities=7).tolist() == [15]


def test_entity_request_by_count_or_fraction_takes_whole_entities():
    for kwargs, k in (({"count": 2}, 2), ({"fraction": 0.5}, 2), ({"fraction": 0.25}, 1)):
        forget = by_entity(IDS, LABELS, groups=GROUPS, entities=None, seed=3, **kwargs)
        chosen = set(GROUPS[torch.isin(IDS, forget)].tolist())
        assert len(chosen) == k
        assert forget.tolist() == IDS[torch.isin(GROUPS, torch.tensor(sorted(chosen)))].tolist()
    draws = {tuple(by_entity(IDS, LABELS, groups=GROUPS, count=2, seed=s).tolist()) for s in range(8)}
    assert len(draws) > 1  # the seed moves the draw
    assert torch.equal(by_entity(IDS, LABELS, groups=GROUPS, count=2, seed=1),
                       by_entity(IDS, LABELS, groups=GROUPS, count=2, seed=1))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"groups": None}, "dataset.num_entities"),
    ({"entities": [5, 4]}, r"\[4\] own no training sample"),
    ({"entities": []}, "forget.entities is empty"),
    ({"entities": [2, 5, 7, 9]}, "retain set would be empty"),
    ({"count": 4}, r"forget.count=4 is out of range.*4 entities"),
    ({"fraction": 0.05}, "selects 0 of 4 entities"),
])
def test_entity_request_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        by_entity(IDS, LABELS, **{"groups": GROUPS, **kwargs})


def test_entity_request_through_the_config_on_digits(tmp_path):
    data = make_data(tmp_path, "forget=entity", "forget.entities=[3,7]")
    group, train = data.samples.group, data.ids["train"]
    assert torch.equal(data.ids["forget"], train[torch.isin(group[train], torch.tensor([3, 7]))])
    assert len(data.ids["forget"]) > 0 and not torch.isin(group[data.ids["retain"]], torch.tensor([3, 7])).any()
    by_fraction = make_data(tmp_path, "forget=entity", "forget.fraction=0.1")
    owners = group[by_fraction.ids["forget"]].unique()
    assert len(owners) == round(0.1 * len(group[train].unique()))
    assert not torch.isin(group[by_fraction.ids["retain"]], owners).any()  # nothing of a chosen entity is kept
    with pytest.raises(ConfigError, match="dataset.num_entities"):
        make_data(tmp_path, "forget=entity", "dataset.num_entities=null")


def test_subclass_request_takes_the_fine_class_by_id_or_name():
    names = ("apple", "bee", "rocket", "sea")
    assert by_subclass(IDS, LABELS, fine_labels=FINE, subclasses=[3]).tolist() == [11, 13, 16]
    assert by_subclass(IDS, LABELS, fine_labels=FINE, fine_names=names, subclasses="rocket").tolist() == [15]
    assert by_subclass(IDS, LABELS, fine_labels=FINE, fine_names=names, subclasses=["bee", 0]).tolist() == [
        10, 12, 14, 17]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fine_labels": None, "subclasses": [1]}, "dataset=cifar100_coarse"),
    ({"subclasses": None}, r"needs forget.subclasses=\[...\].*\[0, 1, 2, 3\]"),
    ({"subclasses": ["rocket"]}, "no class names"),
    ({"subclasses": [4]}, r"\[4\] not among"),
    ({"subclasses": [0, 1, 2, 3]}, "retain set would be empty"),
])
def test_subclass_request_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        by_subclass(IDS, LABELS, **{"fine_labels": FINE, **kwargs})


def test_subclass_request_through_the_config_on_a_tensor_file(tmp_path):
    n = 40
    fine = np.arange(n) % 4
    path = tmp_path / "own.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(n, 1, 2, 2)).astype(np.float32), y=fine // 2, fine=fine)
    data = make_data(tmp_path, "dataset=tensor_file", f"dataset.path={path}", "dataset.input_shape=[1,2,2]",
                     "dataset.num_classes=2", "forget=subclass", "forget.subclasses=[3]")
    train = data.ids["train"]
    assert data.ids["forget"].tolist() == [i for i in train.tolist() if i % 4 == 3]
    assert data.forgotten_classes() == []  # class 1 keeps its other sub-class


@pytest.mark.parametrize(("content", "message"), [
    ("12\n\xff\xfe\n".encode("latin-1"), r"not a UTF-8 text file \(byte 3\)"),
    ("12\n١٣\n".encode(), r"every line must be one integer sample id, the digits 0-9 only \(found '١٣'\)"),
    (b"12\n-3\n", r"the digits 0-9 only \(found '-3'\)"),
    (b"12\n" + b"9" * 30 + b"\n", r"the digits 0-9 only \(found '9999"),
    (b"12\n+13\n", r"the digits 0-9 only \(found '\+13'\)"),
])
def test_an_ids_file_with_foreign_bytes_or_digits_is_refused(tmp_path, content, message):
    from mu_lightning.data.forget import from_file

    (tmp_path / "ids.txt").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        from_file(torch.arange(100), torch.zeros(100, dtype=torch.int64), str(tmp_path / "ids.txt"))


def test_duplicates_in_a_large_ids_file_are_found_fast(tmp_path):
    """300,000 ids with two repeated: the check sorts once (it used to count each id in the whole list)."""
    import time

    from mu_lightning.data.forget import from_file

    ids = list(range(300_000)) + [17, 299_999, 17]
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"duplicate sample ids \[17, 299999\]"):
        from_file(torch.arange(400_000), torch.zeros(400_000, dtype=torch.int64), str(tmp_path / "ids.txt"))
    assert time.perf_counter() - t0 < 10.0
