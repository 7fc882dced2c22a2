"""hparams_search=<method>_optuna: the objective the sweeper minimises, the presets, and a tiny sqlite-backed study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from mu_lightning.errors import ConfigError
from mu_lightning.tuning import objective as hpo
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml"))
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=3", "logger=none"]


@pytest.mark.parametrize(("objective", "message"), [
    ("avg_gap_val", "objective='avg_gap_val' is not a metric name: use <model>/<metric>"),
    ("teacher/avg_gap", "objective='teacher/avg_gap' is not a metric name"),
])
def test_bad_objective_names_are_refused(tmp_path, objective, message):
    with pytest.raises(ConfigError, match=message):
        hpo.check_objective(compose_cfg(tmp_path, [f"objective={objective}"]))


def test_validation_objective_needs_a_validation_split(tmp_path):
    cfg = compose_cfg(tmp_path, ["objective=unlearn/avg_gap_val", "dataset.val_fraction=0"])
    with pytest.raises(ConfigError, match="objective=unlearn/avg_gap_val needs a validation split.*val_fraction=0"):
        hpo.check_objective(cfg)


def test_objective_missing_from_results_lists_what_there_is(tmp_path):
    cfg = compose_cfg(tmp_path, ["objective=unlearn/nonsense"])
    with pytest.raises(ConfigError, match="objective=unlearn/nonsense is not a metric of this run; it has unlearn/a"):
        hpo.objective_value(cfg, {"metrics": {"unlearn/a": 1.0, "gold/b": 2.0}})
    assert hpo.objective_value(compose_cfg(tmp_path), {"metrics": {}}) is None  # no objective: nothing returned


def test_validation_gap_is_reported_and_labelled(run_pipeline):
    """M_u = M under unlearner=none, so their gaps to gold on D_val agree; the test-split gap is another number."""
    r = run_pipeline("unlearner=none", "objective=unlearn/avg_gap_val", "tuning=gold-tuned", *SMALL,
                     shared_cache=True)
    m = r["metrics"]
    assert m["unlearn/avg_gap_val"] == pytest.approx(m["original/avg_gap_val"], abs=1e-9)
    assert m["unlearn/avg_gap_val"] > 0 and m["unlearn/avg_gap_val"] != pytest.approx(m["unlearn/avg_gap"])
    assert r["tuning"] == "gold-tuned" and r["config"]["tuning"] == "gold-tuned"
    plain = run_pipeline("unlearner=none", *SMALL, out="plain", shared_cache=True)
    assert "unlearn/avg_gap_val" not in plain["metrics"] and plain["tuning"] is None


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose_and_tune_existing_options(preset):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
    method = preset.removesuffix("_optuna")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "minimize"
    assert (cfg.objective, cfg.tuning, cfg.hydra.runtime.choices.unlearner) == (
        "unlearn/avg_gap_val", "gold-tuned", method)
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, f"{preset} tunes {key}, which the config does not have"


@pytest.mark.slow
def test_tiny_optuna_study_on_sqlite(tmp_path):
    """Two trials stored in sqlite (optuna 2.10 needs sqlalchemy<2 there): the best value is the best trial's."""
    optuna = pytest.importorskip("optuna")
    sweep, db = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "hparams_search=finetune_optuna",
                          "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={db}", f"hydra.sweep.dir={sweep}",
                          *SMALL, f"paths.cache_dir={tmp_path / 'cache'}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(2)]
    assert all(t["tuning"] == "gold-tuned" for t in trials)
    gaps = [t["metrics"]["unlearn/avg_gap_val"] for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(gaps))
    study = optuna.load_study(study_name="finetune_avg_gap_val", storage=db)
    assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == pytest.approx(sorted(gaps))
