"""Evaluation only (eval.py, docs/checkpoints.md): a run's own unlearned.pt, given as a model made elsewhere,
reproduces the run's metrics; a run directory evaluated again with another tier keeps the run's files as they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from mu_lightning.errors import ConfigError
from mu_lightning.eval_cli import evaluation_config, rerun_config
from mu_lightning.pipeline import run
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=3", "logger=none"]


def test_eval_only_on_a_runs_own_unlearned_weights_reproduces_its_metrics(run_pipeline, tmp_path):
    first = run_pipeline("unlearner=gradient_ascent", "save_unlearned=true", out="first")
    again = run_pipeline(f"unlearned.checkpoint={tmp_path / 'first' / 'unlearned.pt'}", "forget=indices",
                         f"forget.path={tmp_path / 'first' / 'forget_ids.txt'}", out="again")
    facts = again["stages"]["unlearn"]
    assert facts["source"] == "checkpoint" and facts["steps"] is None
    assert again["seconds"]["unlearn"] is None and again["metrics"]["unlearn/train_seconds"] is None
    assert again["metrics"]["unlearn/speedup"] is None and again["metrics"]["unlearn/grad_step_ratio"] is None
    assert all(again["stages"][s]["cache_hit"] for s in ("original", "gold"))  # the same gold, from the cache
    same = {k: v for k, v in again["metrics"].items() if v is not None and "seconds" not in k}
    assert "unlearn/forget_acc" in same and "unlearn/avg_gap" in same
    assert same == {k: first["metrics"][k] for k in same}


def test_eval_py_needs_a_model_or_a_run(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.py needs unlearned.checkpoint=PATH .* or run_dir=DIR"):
        evaluation_config(OmegaConf.create({"run_dir": None, "unlearned": {"checkpoint": None}}))


def test_a_run_without_its_unlearned_weights_says_to_keep_them(tmp_path):
    cfg = compose_cfg(tmp_path, ["unlearner=none"])
    run(cfg)
    with open_dict(cfg):
        cfg.run_dir, cfg.paths.output_dir = str(tmp_path / "run"), str(tmp_path / "run" / "eval_fast")
    with pytest.raises(ConfigError, match=r"has no unlearned.pt: .* run it again with save_unlearned=true"):
        rerun_config(cfg, ["run_dir", "metric"])
    (tmp_path / "run" / "unlearned.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^seed cannot be changed when evaluating run_dir="):
        rerun_config(cfg, ["run_dir", "seed"])


@pytest.fixture
def saved_run(tmp_path):
    """A completed run with its unlearned weights, and the eval.py config that evaluates it again."""
    cfg = compose_cfg(tmp_path, ["unlearner=gradient_ascent", "save_unlearned=true", "train.epochs=2"])
    run(cfg)
    again = compose_cfg(tmp_path, ["unlearner=gradient_ascent", "train.epochs=2"])
    with open_dict(again):
        again.run_dir, again.paths.output_dir = str(tmp_path / "run"), str(tmp_path / "run" / "eval_full")
    return tmp_path / "run", cfg, again


def test_eval_reads_the_config_its_results_json_recorded_not_hydras_copy(saved_run):
    """A failed rerun rewrote .hydra/config.yaml while the old outputs stayed: the old model was scored on another
    forget set (issue 24)."""
    run_dir, cfg, again = saved_run
    (run_dir / ".hydra").mkdir()
    other = cfg.copy()
    other.forget.fraction, other.seed = 0.5, 7
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(other))
    config = rerun_config(again, ["run_dir", "metric"])
    assert config.forget.fraction == cfg.forget.fraction and config.seed == cfg.seed
    assert config.unlearned.checkpoint == str(run_dir / "unlearned.pt")
    assert config.paths.output_dir == str(run_dir / "eval_full")  # every path of the run moved to the eval's


def test_a_run_directory_mixing_two_runs_files_is_refused(saved_run, tmp_path):
    run_dir, _, again = saved_run
    (run_dir / "forget_ids.txt").write_text("1\n2\n")
    with pytest.raises(ConfigError, match=r"mixes files of different runs: forget_ids.txt is not the one its "):
        rerun_config(again, ["run_dir", "metric"])
    (run_dir / "forget_ids.txt").unlink()
    with pytest.raises(ConfigError, match=r"forget_ids.txt"):
        rerun_config(again, ["run_dir", "metric"])


def test_eval_refuses_overrides_that_change_a_stage_cache_key(saved_run):
    run_dir, _, again = saved_run
    with open_dict(again):
        again.trainer.max_steps = 3
    with pytest.raises(ConfigError, match=r"^trainer.max_steps cannot be changed when evaluating run_dir=.*cache "
                                          "keys"):
        rerun_config(again, ["run_dir", "metric", "trainer.max_steps"])
    with open_dict(again):
        del again.trainer.max_steps
        again.trainer.enable_progress_bar = False
    assert rerun_config(again, ["run_dir", "trainer.enable_progress_bar"]).trainer.enable_progress_bar is False


def test_eval_never_writes_into_the_run_it_scores(saved_run):
    run_dir, _, again = saved_run
    with open_dict(again):
        again.paths.output_dir = str(run_dir)
    with pytest.raises(ConfigError, match=r"^hydra.run.dir=.* is the run being evaluated"):
        rerun_config(again, ["run_dir", "hydra.run.dir"])
    out = subprocess.run([sys.executable, "eval.py", f"run_dir={run_dir}", f"hydra.run.dir={run_dir}"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "is the run being evaluated" in out.stderr, out.stderr[-2000:]
    assert not (run_dir / ".hydra").exists() and not (run_dir / "previous").exists()


@pytest.mark.slow
def test_eval_py_evaluates_a_run_again_with_the_full_tier_without_touching_it(tmp_path):
    cache, run_dir = f"paths.cache_dir={tmp_path / 'cache'}", tmp_path / "run"
    made = subprocess.run([sys.executable, "train.py", *SMALL, cache, "save_unlearned=true",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert made.returncode == 0, made.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    again = subprocess.run([sys.executable, "eval.py", f"run_dir={run_dir}", "metric=full", cache],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    old = json.loads((run_dir / "results.json").read_text())
    new = json.loads((run_dir / "eval_full" / "results.json").read_text())
    assert all(new["stages"][s]["cache_hit"] for s in ("original", "gold"))
    assert new["metrics"]["unlearn/ks_pvalue"] is not None and "unlearn/ks_pvalue" not in old["metrics"]
    assert all(new["metrics"][k] == v for k, v in old["metrics"].items() if new["metrics"][k] is not None
               and "seconds" not in k)


def test_a_run_writes_its_split_so_a_model_of_your_own_can_be_trained_on_it(saved_run):
    run_dir, _, _ = saved_run
    split = json.loads((run_dir / "split_ids.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert {s: len(ids) for s, ids in split.items()} == {s: results["sizes"][s] for s in ("train", "val", "test")}
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    forget = {int(line) for line in (run_dir / "forget_ids.txt").read_text().split()}
    assert forget <= set(split["train"])
    assert "split_ids.json" in results["files"]  # one of the run's files eval.py checks


def test_eval_warns_when_a_checkpoint_scores_better_on_test_than_on_its_training_samples(caplog):
    from mu_lightning.eval_cli import warn_about_checkpoints

    results = {"metrics": {"unlearn/test_acc": 0.97, "unlearn/retain_acc": 0.80, "gold/test_acc": 0.9,
                           "gold/retain_acc": 0.6},
               "stages": {"unlearn": {"source": "checkpoint"}, "gold": {"cache_hit": True}}}
    with caplog.at_level("WARNING"):
        (warning,) = warn_about_checkpoints(results)
    assert warning.startswith("unlearned.checkpoint scores 0.9700 on the test split but only 0.8000 on the retain")
    assert "split_ids.json" in warning and warning in caplog.text  # the gold made here is not a checkpoint: no warning
    results["metrics"]["unlearn/test_acc"] = 0.82
    assert warn_about_checkpoints(results) == []


@pytest.mark.slow
def test_eval_py_on_a_wandb_run_with_the_full_tier_completes_offline(tmp_path):
    """Issue 24: eval.py run_dir=… metric=full on a W&B run died with W&B's "run is finished" after the training."""
    cache, run_dir = f"paths.cache_dir={tmp_path / 'cache'}", tmp_path / "run"
    env = {**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    made = subprocess.run([sys.executable, "train.py", *SMALL[:-1], "logger=wandb", cache, "save_unlearned=true",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert made.returncode == 0, made.stderr[-2000:]
    again = subprocess.run([sys.executable, "eval.py", f"run_dir={run_dir}", "metric=full", "metric.seeds=3", cache],
                           capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    new = json.loads((run_dir / "eval_full" / "results.json").read_text())
    assert new["metrics"]["unlearn/ks_pvalue"] is not None
    assert list((run_dir / "eval_full" / "wandb").glob("offline-run-*"))  # its W&B runs in its own directory
