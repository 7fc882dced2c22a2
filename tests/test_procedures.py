"""The written procedures for a new metric and a new dataset hold for everything shipped: a step left out fails
here with a pointer to the procedure (docs/metrics.md §10, docs/datasets.md "Adding a dataset"). A new method's steps
are checked by the registry and catalogue tests, whose messages point to docs/methods.md "Adding a method"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from mu_lightning.runtime.targets import check_target

ROOT = Path(__file__).resolve().parents[1]
DATASETS = sorted((ROOT / "conf" / "dataset").glob("*.yaml"))
REQUIRED = ("source", "input_shape", "num_classes", "test_fraction", "val_fraction", "split_seed", "augment")
SUFFIXES = ("_mean", "_ci95")  # metric=seeds' summaries of any metric (docs/metrics.md §1, last row)


def documented_metrics() -> set[str]:
    """The names in the first column of docs/metrics.md's metric table, ``{a,b}`` expanded."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    table = text[text.index("## 1. Metric table"):text.index("## 2. Accuracy")]
    names = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        for name in re.findall(r"`([a-z0-9_{},<>]+)`", row.split("|")[1]):
            m = re.fullmatch(r"([a-z0-9_]*)\{([a-z0-9_,]+)\}([a-z0-9_]*)", name)
            names |= {f"{m[1]}{part}{m[3]}" for part in m[2].split(",")} if m else {name}
    return names


def undocumented(metrics: dict) -> list[str]:
    known = documented_metrics()
    names = {k.split("/", 1)[1] for k in metrics if "/" in k and not k.startswith("seconds/")}
    return sorted(n for n in names if n not in known and not (n.endswith(SUFFIXES) and n.rsplit("_", 1)[0] in known))


@pytest.mark.parametrize("tier", ["fast", pytest.param("seeds", marks=pytest.mark.slow)])
def test_every_metric_a_run_writes_has_a_row_in_the_metric_table(run_pipeline, tier):
    res = run_pipeline(f"metric={tier}", *(["metric.seeds=3"] if tier != "fast" else []), shared_cache=True)
    missing = undocumented(res["metrics"])
    assert not missing, (f"metrics without a row in docs/metrics.md's metric table: {missing}; follow "
                         "docs/metrics.md §10 (Adding a metric)")


def test_the_metric_check_fails_for_a_name_missing_from_the_table():
    assert undocumented({"unlearn/forget_acc": 1.0, "unlearn/gold_js_test": 0.1, "unlearn/tow_ci95": 0.0,
                         "unlearn/my_new_score": 0.5}) == ["my_new_score"]


@pytest.mark.parametrize("path", DATASETS, ids=lambda p: p.stem)
def test_every_dataset_follows_the_procedure(path):
    where = f"conf/dataset/{path.name}: follow docs/datasets.md, \"Adding a dataset\""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"python train.py dataset={path.stem}" in first, f"{where} (first line)"
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={path.stem}"]).dataset  # with what its defaults bring
    assert cfg.name == path.stem, f"{where} (name: {path.stem})"
    missing = set(REQUIRED) - set(cfg)
    assert not missing, f"{where}: missing {sorted(missing)}"
    assert cfg.source.get("_partial_") is True, f"{where} (source._partial_: true)"
    check_target(cfg.source._target_, f"{path.stem}: dataset.source._target_")  # a @configurable loader
    table = (ROOT / "docs" / "datasets.md").read_text().split("## Forget requests")[0]
    assert f"`{path.stem}`" in table, f"{where} (its row in the table of docs/datasets.md)"


def test_an_unmarked_data_function_cannot_be_named_by_a_config():
    from mu_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="which is not a function configs may name"):
        check_target("mu_lightning.data.sources.assign_entities", "dataset.source._target_")
