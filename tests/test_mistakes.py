"""Plausible mistakes end in one line naming the option, the value and what is allowed (issue 24): typos in optional
groups and keys, a group switched off with ``false``, options of a logger that is not selected, a package on Hydra's
search path, a monitor cadence of 0, an earlier run's outputs that cannot be moved aside."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mu_lightning.errors import ConfigError
from mu_lightning.files import set_aside_previous
from mu_lightning.runtime.checks import check_config
from mu_lightning.runtime.command_line import check_command_line
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=300", "train.epochs=1", "logger=none", "unlearner=none"]


@pytest.mark.parametrize("override,message", [
    ("experiment=cifar10_resnet18_clas", "experiment=cifar10_resnet18_clas: there is no such option (did you mean "
                                         "cifar10_resnet18_class?)"),
    ("debug=fsat", "debug=fsat: there is no such option (did you mean fast?); choose one of default, fast"),
    ("hparams_search=finetune_optna", "(did you mean finetune_optuna?)"),
    ("protocol@unlearner=cifar10_clas/finetune", "protocol@unlearner=cifar10_clas/finetune: there is no such option "
                                                 "(did you mean cifar10_class?)"),
])
def test_a_typo_in_an_optional_group_is_refused_not_skipped(override, message):
    with pytest.raises(ConfigError) as info:
        check_command_line([override])
    assert message in str(info.value)
    with pytest.raises(ConfigError):
        check_command_line(["-m", f"{override.split('=')[0]}=x,{override.split('=', 1)[1]}"])


def test_the_existing_options_and_the_datasets_own_protocol_fallback_pass():
    assert check_command_line(["experiment=cifar10_resnet18_class", "debug=fast"]) is None  # None: not refused
    assert check_command_line(["dataset=synthetic"]) is None  # no conf/protocol/synthetic/: the general values
    assert check_command_line(["protocol@unlearner=cifar10_class/finetune"]) is None


@pytest.mark.parametrize("overrides,message", [
    (["+forget.fration=0.2"], "forget.fration is not an option of random_sample (did you mean forget.fraction?)"),
    (["+model.hiden=3"], "model.hiden is not an option of MLP (did you mean model.hidden?): its options are"),
    (["+train.optimizer.learning_rate=0.1"], "train.optimizer.learning_rate is not an option of SGD"),
    (["train=false"], "train=False is not allowed: it is the recipe of the original and gold models, not a switch"),
    (["+logger.wandb.entity=team"], "logger.wandb sets options of a logger that is not selected (entity): choose it "
                                    "with logger=wandb"),
    (["callbacks.forget_retain.every_n_steps=0"], "callbacks.forget_retain.every_n_steps=0 must be > 0"),
])
def test_a_key_nothing_reads_is_one_line_with_a_suggestion(tmp_path, overrides, message):
    cfg = compose_cfg(tmp_path, [*SMALL, *overrides])
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert message in str(info.value)


def test_a_misspelt_key_from_the_command_line_is_one_line_not_a_traceback(tmp_path):
    out = subprocess.run([sys.executable, "train.py", *SMALL, "+forget.fration=0.2", f"hydra.run.dir={tmp_path}/r",
                          f"paths.cache_dir={tmp_path}/c"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text, text[-2000:]
    assert "error: forget.fration is not an option of random_sample (did you mean forget.fraction?)" in text


def test_a_package_on_hydras_search_path_is_refused_before_it_is_imported():
    name = "definitely_not_imported_conf_pkg"
    with pytest.raises(ConfigError, match=r"hydra.searchpath=\[pkg://.*is not allowed: a pkg:// entry imports"):
        check_command_line([f"hydra.searchpath=[pkg://{name}]"])
    assert name not in sys.modules


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may move a read-only folder")
def test_an_earlier_runs_folder_that_cannot_move_is_refused_before_anything_moves(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "previous").mkdir()
    (tmp_path / "previous" / "results.json").write_text("{}")
    (tmp_path / "previous").chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"holds an earlier run's previous/, which cannot be moved aside"):
            set_aside_previous(tmp_path)
        assert (tmp_path / "results.json").exists()  # nothing half-moved
    finally:
        (tmp_path / "previous").chmod(0o700)


def test_a_cache_record_with_a_wrong_typed_fact_is_trained_again_not_a_traceback(tmp_path, caplog):
    import json

    import torch

    from mu_lightning.cache import StageCache

    cache = StageCache(tmp_path)
    cache.store("gold", "k1", {"w": torch.ones(2)}, {"fit_seconds": 1.5, "steps": 3})
    record = tmp_path / "gold-k1.json"
    info = json.loads(record.read_text())
    info["meta"]["fit_seconds"] = "fast"
    record.write_text(json.dumps(info))
    with caplog.at_level("WARNING"):
        assert cache.load("gold", "k1") is None
    assert "its record's meta.fit_seconds is not a number" in caplog.text and not record.exists()
