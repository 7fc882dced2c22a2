"""Corrective unlearning wired into the pipeline: the manipulation in the datamodule, the clean reference model, the
corrective metrics and table, the cache keys and the errors (docs/corrective.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.poison import BadNets, NoPoison
from mu_lightning.errors import ConfigError
from mu_lightning.outputs import summary_table
from mu_lightning.pipeline import run, stage_key
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logger=none", "callbacks.forget_retain=null"]  # digits (the default data) with nothing but results


def digits_data(tmp_path, poison, *overrides: str) -> tuple[UnlearningDataModule, object]:
    """The digits datamodule ``python train.py <overrides>`` builds, with ``poison`` applied; and its config."""
    cfg = compose_cfg(tmp_path, list(overrides), fast=False)
    data = UnlearningDataModule(source=instantiate(cfg.dataset.source), forget=instantiate(cfg.forget),
                                test_fraction=cfg.dataset.test_fraction, val_fraction=cfg.dataset.val_fraction,
                                split_seed=cfg.dataset.split_seed, poison=poison)
    data.setup()
    return data, cfg


def test_the_datamodule_stamps_the_trigger_exactly_on_the_manipulated_training_ids(tmp_path):
    bn = BadNets(share=0.05, target_class=0, patch_size=2, seed=0)
    data, cfg = digits_data(tmp_path, bn, "forget=poisoned", "forget.identified=0.25")
    raw = instantiate(cfg.dataset.source)()
    ids, train = data.poison_ids, data.ids["train"]
    assert len(ids) == round(0.05 * len(train)) and torch.isin(ids, train).all() and (raw.y[ids] != 0).all()
    changed = (data.samples.x != raw.x).flatten(1).any(1).nonzero().flatten()
    assert torch.equal(changed, ids)  # only the manipulated samples, none of val or test
    patch = torch.zeros(8, 8, dtype=torch.bool)
    patch[6:, 6:] = True
    assert torch.equal(data.samples.x[:, :, ~patch], raw.x[:, :, ~patch])  # and only inside the 2×2 corner
    assert (data.samples.x[ids][:, :, patch] == 1.0).all()  # the largest training input of digits in [0, 1]
    relabelled = (data.samples.y != raw.y).nonzero().flatten()
    assert torch.equal(relabelled, ids) and (data.samples.y[ids] == 0).all()
    # the request forgets a quarter of them; the clean split is D without any of them
    assert len(data.ids["forget"]) == round(0.25 * len(ids)) and torch.isin(data.ids["forget"], ids).all()
    assert torch.equal(data.ids["clean"], train[~torch.isin(train, ids)])


def test_a_sequence_of_requests_draws_from_the_manipulated_ids_too(tmp_path):
    bn = BadNets(share=0.05, patch_size=2)
    data, _ = digits_data(tmp_path, bn, "forget=sequential",
                          "forget.requests=[{kind:poisoned,identified:0.5},{kind:random,fraction:0.05}]")
    first = data.requests[0]
    assert len(first) == round(0.5 * len(data.poison_ids)) and torch.isin(first, data.poison_ids).all()


def test_without_a_manipulation_there_is_no_clean_split_and_the_cache_keys_stay(tmp_path):
    plain, cfg = digits_data(tmp_path, None)
    none, _ = digits_data(tmp_path, NoPoison())
    bad, _ = digits_data(tmp_path, BadNets(share=0.05, patch_size=2))
    assert "clean" not in none.ids and len(none.poison_ids) == 0
    for stage in ("original", "gold"):
        assert stage_key(cfg, none, stage, 0) == stage_key(cfg, plain, stage, 0)  # poison=none: today's key
        assert stage_key(cfg, bad, stage, 0) != stage_key(cfg, plain, stage, 0)


def test_the_key_names_the_manipulation_even_when_the_data_is_the_same(tmp_path):
    """Two settings that manipulate the same samples the same way (a position given by name or by pixel) still get
    different keys: the manipulation's settings are part of the key, not only the data they produce."""
    by_name, cfg = digits_data(tmp_path, BadNets(share=0.05, patch_size=2, position="bottom-right"))
    by_pixel, _ = digits_data(tmp_path, BadNets(share=0.05, patch_size=2, position=[6, 6]))
    assert torch.equal(by_name.samples.x, by_pixel.samples.x)
    assert by_name.fingerprint("train") == by_pixel.fingerprint("train")
    assert stage_key(cfg, by_name, "original", 0) != stage_key(cfg, by_pixel, "original", 0)


def test_badnets_on_digits_through_the_pipeline(run_pipeline, tmp_path):
    """M learns the backdoor, the clean model does not, and with every manipulated sample identified the usual
    gold is the clean model (same samples, recipe and seed); with a quarter identified it keeps the backdoor."""
    full = run_pipeline("poison=badnets", "forget=poisoned", "forget.identified=1.0", "unlearner=none", *QUIET,
                        fast=False, out="all")
    m = full["metrics"]
    assert m["original/backdoor_asr"] > 0.8
    assert m["clean/backdoor_asr"] < 0.1  # near chance: the trigger means nothing to it
    assert m["gold/backdoor_asr"] == m["clean/backdoor_asr"] and m["gold/clean_avg_gap"] == 0.0
    assert m["gold/clean_agreement_test"] == 1.0
    poison_ids = (tmp_path / "all" / "poison_ids.txt").read_text()
    assert poison_ids == (tmp_path / "all" / "forget_ids.txt").read_text()  # identified=1.0: all of them
    assert full["sizes"]["clean"] == full["sizes"]["train"] - len(poison_ids.split())
    quarter = run_pipeline("poison=badnets", "forget=poisoned", "forget.identified=0.25", "unlearner=none", *QUIET,
                           fast=False, out="quarter")
    q = quarter["metrics"]
    assert quarter["stages"]["clean"]["cache_hit"] and quarter["stages"]["original"]["cache_hit"]
    assert q["gold/backdoor_asr"] > q["clean/backdoor_asr"] + 0.5  # the unidentified three quarters keep it
    _check_clean_relative(q, tmp_path / "quarter")


def _check_clean_relative(m: dict, run_dir: Path) -> None:
    """The clean-relative metrics from the saved logits and the other metrics, recomputed by hand."""
    saved = torch.load(run_dir / "logits.pt", weights_only=True)
    y = saved["labels"]["test"]
    pred = {name: saved["logits"][name]["test"].argmax(1) for name in ("original", "clean", "gold", "unlearn")}
    for name in ("original", "gold", "unlearn"):
        agree = (pred[name] == pred["clean"]).float().mean().item()
        assert m[f"{name}/clean_agreement_test"] == pytest.approx(agree)
        gap = abs((pred[name] == y).float().mean().item() - (pred["clean"] == y).float().mean().item())
        assert m[f"{name}/clean_test_acc_gap"] == pytest.approx(gap)
        assert m[f"{name}/clean_backdoor_asr_gap"] == pytest.approx(abs(m[f"{name}/backdoor_asr"]
                                                                        - m["clean/backdoor_asr"]))
        assert m[f"{name}/clean_avg_gap"] == pytest.approx((gap + m[f"{name}/clean_backdoor_triggered_acc_gap"]) / 2)
    keep = y != 0  # the target class
    assert m["clean/backdoor_clean_acc"] == pytest.approx((pred["clean"][keep] == y[keep]).float().mean().item())


def test_the_table_shows_the_clean_model_and_the_corrective_columns_only_when_there_are_some():
    stages = {s: {"cache_hit": s != "unlearn"} for s in ("original", "clean", "gold", "unlearn")}
    metrics = {f"{s}/{k}": v for s in stages for k, v in (("forget_acc", 0.5), ("retain_acc", 0.25),
                                                          ("test_acc", 0.125), ("backdoor_asr", 0.75),
                                                          ("backdoor_triggered_acc", 1.0))}
    table = summary_table({"metrics": metrics, "seconds": dict.fromkeys(stages, 1.5), "stages": stages})
    lines = table.splitlines()
    assert lines[0] == "| model     | forget acc | retain acc | test acc | ASR    | trig. acc | seconds |"
    assert lines[1] == "|-----------|-----------:|-----------:|---------:|-------:|----------:|--------:|"
    assert lines[3] == "| clean     |     0.5000 |     0.2500 |   0.1250 | 0.7500 |    1.0000 |    1.50 | (cached)"
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["original", "clean", "gold", "unlearned"]
    del stages["clean"]
    plain = summary_table({"metrics": {k: v for k, v in metrics.items() if "backdoor" not in k},
                           "seconds": dict.fromkeys(stages, 1.5), "stages": stages}).splitlines()
    assert plain[0] == "| model     | forget acc | retain acc | test acc | seconds |"  # as before this feature
    assert plain[2] == "| original  |     0.5000 |     0.2500 |   0.1250 |    1.50 | (cached)"
    assert len(plain) == 5


BAD = {
    "share_zero": (["poison=badnets", "poison.share=0"], r"poison.share=0 is out of range: it must be > 0 and <= 1"),
    "share_above_one": (["poison=interclass", "poison.share=1.5"], r"poison.share=1.5 is out of range"),
    "target_out_of_range": (["poison=badnets", "poison.target_class=10"],
                            r"poison.target_class=10 is out of range: the dataset has 10 classes \(0 to 9\)"),
    "pair_out_of_range": (["poison=interclass", "poison.classes=[3,12]"], r"poison.classes=\[3, 12\] is out of range"),
    "patch_too_large": (["poison=badnets", "poison.patch_size=9"],
                        r"poison.patch_size=9 is larger than the images \(8×8\): it must be at most 8"),
    "poisoned_without_poison": (["forget=poisoned"], r"forget=poisoned needs a poison=\.\.\. manipulation"),
    "identified_zero": (["poison=badnets", "forget=poisoned", "forget.identified=0"],
                        r"forget.identified=0 is out of range: it must be > 0 and <= 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_settings_fail_before_training_with_a_specific_message(tmp_path, case):
    overrides, message = BAD[case]
    cfg = compose_cfg(tmp_path, [*overrides, *QUIET], fast=False)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not [p.name for p in (tmp_path / "run").glob("*") if p.suffix in (".txt", ".json", ".pt")]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.pt"))


@pytest.mark.parametrize("case", ["target_out_of_range", "poisoned_without_poison"])
def test_bad_settings_exit_with_code_2_from_the_command_line(tmp_path, case):
    overrides, message = BAD[case]
    out = subprocess.run([sys.executable, "train.py", *overrides, *QUIET, f"hydra.run.dir={tmp_path / 'run'}",
                          f"paths.cache_dir={tmp_path / 'cache'}"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 2, out.stderr[-2000:]
    assert re.search(message, out.stdout + out.stderr)
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "cache").exists()
