"""Configs cannot run code (mu_lightning/runtime/targets.py): each attack of issue 17 replayed, a payload that would
write a marker file must be refused with a message and the marker must not exist; every shipped config still passes."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from functools import cache
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from torch import nn

from mu_lightning.errors import ConfigError
from mu_lightning.runtime.command_line import check_command_line
from mu_lightning.runtime.targets import ENV, check_target, check_targets

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic", "dataset.source.num_samples=600", "train.epochs=1", "logger=none", "metric=fast"]


# --- a user's own package, for MU_LIGHTNING_ALLOW -------------------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self, input_shape: list[int] = (1, 8, 8), num_classes: int = 10) -> None:
        super().__init__()
        self.head = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class Helper:
    """A plain class: not a model, module or callback."""


def write_marker(path: str) -> None:
    Path(path).write_text("ran")


class _Payload:
    """Unpickling it creates ``marker`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- helpers ------------------------------------------------------------------------------------------------------


@cache
def reach(attr: str, under: str = "mu_lightning") -> str:
    """``<a module under ``under``>.<attr>``: a path that starts like an allowed one and reaches another module
    through an import (``mu_lightning.data.archives.shutil``); found at test time so that refactors keep it valid."""
    package = importlib.import_module(under)
    names = [under] + [m.name for m in pkgutil.walk_packages(package.__path__, f"{under}.")]
    for name in sorted(names):
        if name.endswith(".conf") or ".conf." in name:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module that needs an optional extra
            continue
        if type(getattr(module, attr, None)) is type(os):
            return f"{name}.{attr}"
    pytest.skip(f"no module under {under} imports {attr}")


def composed(*overrides: str):
    with initialize_config_module("mu_lightning.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def assert_passes(cfg) -> None:
    """``check_targets`` accepts ``cfg``: the test fails with its message if it refuses."""
    check_targets(cfg)


def expect_refusal(cfg, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        check_targets(cfg)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def train(tmp_path: Path, *args: str, env: dict | None = None, timeout: int = 300):
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}",
                          f"paths.cache_dir={tmp_path / 'cache'}"], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT, env={**os.environ, **(env or {})})
    return out, out.stdout + out.stderr, run_dir


def assert_refused(out, text: str, run_dir: Path, marker: Path, *fragments: str) -> None:
    assert not marker.exists(), f"the payload ran:\n{text[-3000:]}"
    assert out.returncode == 2, text[-3000:]
    assert "is not allowed" in text, text[-3000:]
    for fragment in fragments:
        assert fragment in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not (run_dir / "results.json").exists()


# --- resolving a target: what it is, not how it is spelt ---------------------------------------------------------


def test_a_path_through_an_allowed_module_to_another_function_is_refused():
    load = f"{reach('torch', 'mu_lightning.unlearners')}.load"
    message = expect_refusal(composed(f"unlearner._target_={load}"), f"unlearner._target_='{load}' is not allowed",
                      "it names torch.serialization.load, which is not a function configs may name",
                      f"add it to the environment variable {ENV}")
    assert "allowed: mu_lightning's unlearners, models" in message
    copy = f"{reach('shutil')}.copyfile"
    expect_refusal(composed(f"dataset.source._target_={copy}"), "is not allowed")
    expect_refusal(composed(f"model._target_={reach('math', 'mu_lightning.models')}.sqrt"), "it names math.sqrt")


def test_a_package_outside_the_list_is_refused_before_it_is_imported():
    outside = "it lies outside the modules configs may import from"
    expect_refusal(composed("unlearner._target_=builtins.exec"), "unlearner._target_='builtins.exec' is not allowed",
                   outside)
    expect_refusal(composed("unlearner._target_=mu_lightning.pipeline.torch.load"), outside)
    name = "definitely_not_imported_mod"
    expect_refusal(composed(f"model._target_={name}.Net"), outside)
    assert name not in sys.modules


def test_an_allowed_object_must_be_named_canonically():
    sgd = f"{reach('torch', 'mu_lightning.unlearners')}.optim.SGD"
    expect_refusal(composed(f"train.optimizer._target_={sgd}"), "reaches torch.optim.sgd.SGD through another module's "
            "attributes; name it torch.optim.SGD")
    expect_refusal(composed("model._target_=mu_lightning.models.CNN.__init__"), "__dunder__")
    for path in ("torch.optim.SGD", "torch.optim.sgd.SGD", "mu_lightning.unlearners.SCRUB",
                 "mu_lightning.unlearners.scrub.SCRUB", "torch.optim.lr_scheduler.CosineAnnealingLR",
                 "lightning.pytorch.callbacks.EarlyStopping", "torch.nn.Linear"):
        assert check_target(path).__name__ == path.rsplit(".", 1)[-1]


def test_helpers_of_the_projects_modules_are_not_targets():
    """A function is allowed by its exact name, never by its module: the loggers' helpers stay out."""
    with pytest.raises(ConfigError, match="it names mu_lightning.tracking.loggers.close, which is not a function"):
        check_target("mu_lightning.tracking.loggers.close")
    with pytest.raises(ConfigError, match="outside the modules"):
        check_target("mu_lightning.cache.StageCache")


def test_an_interpolation_cannot_hide_a_target():
    cfg = OmegaConf.create({"model": {"x": "${oc.create:'{_target_: builtins.exec}'}"}})
    expect_refusal(cfg, "model.x=", "the resolver oc.create is not one a config may use")
    cfg = OmegaConf.create({"name": "builtins.exec", "model": {"_target_": "${name}"}})
    expect_refusal(cfg, "model._target_='builtins.exec'")
    cfg = OmegaConf.create({"model": {"_target_": "${no_such_option}"}})
    expect_refusal(cfg, "does not resolve")


def test_keys_that_switch_off_a_safety_are_refused_anywhere():
    expect_refusal(composed("+dataset.source.weights_only=false"), "dataset.source.weights_only=False is not allowed",
            "switches off a safety")
    expect_refusal(composed("+callbacks.forget_retain.deep={allow_pickle: true}"), "allow_pickle=True is not allowed")
    expect_refusal(composed("+model.trust_remote_code=true"), "trust_remote_code")
    check_targets(composed("+dataset.source.weights_only=true"))


def test_private_keys_other_than_hydras_are_refused():
    expect_refusal(composed("+model._foo_=1"), "model._foo_ is not allowed", "reserved for Hydra's")
    check_targets(composed("+model._recursive_=false", "+model._convert_=all"))


# --- Hydra's own settings ---------------------------------------------------------------------------------------


def test_hydra_settings_are_checked_in_the_composed_config():
    copy = f"{reach('shutil')}.copyfile"
    expect_refusal(composed(f"+hydra.callbacks.x={{_target_: {copy}}}"), "hydra.callbacks.x._target_=")
    expect_refusal(composed("+hydra.job_logging.handlers.x={class: shutil.copyfile}"),
            "hydra.job_logging.handlers.x.class='shutil.copyfile' is not allowed")
    expect_refusal(composed("hydra.job_logging.handlers.console.stream=ext://os.system"), "ext://os.system")
    expect_refusal(composed("+hydra.job_logging.handlers.q={class: logging.handlers.QueueHandler, queue: os.getpid}"),
            "hydra.job_logging.handlers.q.queue='os.getpid' is not allowed")
    check_targets(composed("+hydra.job_logging.handlers.q={class: logging.handlers.QueueHandler, queue: queue.Queue}",
                           "+hydra.job_logging.handlers.r={class: logging.handlers.RotatingFileHandler}"))
    expect_refusal(composed("+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"), "hydra.job.env_set.LD_PRELOAD is not allowed")
    expect_refusal(composed(f"+hydra.job.env_set.{ENV}=os.*"), f"hydra.job.env_set.{ENV} is not allowed")
    check_targets(composed("+hydra.job.env_set.CUDA_VISIBLE_DEVICES=0"))


def test_the_command_line_check_refuses_before_hydra_starts(tmp_path):
    with pytest.raises(ConfigError, match="--experimental-rerun=x.pickle is not allowed"):
        check_command_line(["--experimental-rerun", "x.pickle"])
    with pytest.raises(ConfigError, match="hydra.callbacks.x._target_"):
        check_command_line([f"+hydra.callbacks.x={{_target_: {reach('os')}.open}}"])
    presets = tmp_path / "presets"
    (presets / "hydra" / "job_logging").mkdir(parents=True)
    (presets / "hydra" / "job_logging" / "fancy.yaml").write_text(
        "version: 1\nformatters:\n  f:\n    (): builtins.exec\nroot:\n  level: INFO\n")
    with pytest.raises(ConfigError, match=r"hydra.job_logging.formatters.f.\(\)='builtins.exec'"):
        check_command_line(["--config-dir", str(presets), "hydra/job_logging=fancy"])
    check_command_line([])
    check_command_line(["--help"])
    check_command_line(["-m", "unlearner=glob(*)", "seed=0,1"])


def test_each_value_of_a_sweep_is_checked(tmp_path):
    """A bad preset among several swept ones; its job's hydra.job_logging would apply before that job's checks."""
    presets = tmp_path / "presets"
    (presets / "experiment").mkdir(parents=True)
    (presets / "experiment" / "innocent.yaml").write_text(
        "# @package _global_\nhydra:\n  job_logging:\n    handlers:\n      extra:\n        class: shutil.copyfile\n")
    (presets / "hparams_search").mkdir()
    (presets / "hparams_search" / "tune.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      experiment: choice(cifar10_resnet18_class, "
        "innocent)\n")
    for argv in (["-m", "experiment=cifar10_resnet18_class,innocent"], ["-m", "experiment=glob(*)"],
                 ["hparams_search=tune"]):
        with pytest.raises(ConfigError, match="hydra.job_logging.handlers.extra.class='shutil.copyfile'"):
            check_command_line(["--config-dir", str(presets), *argv])


@pytest.mark.parametrize("argv,fragment", [
    (["hydra/launcher=slurm", "hydra.launcher.setup=[touch marker]"], "hydra.launcher.setup is not allowed"),
    (["hydra/sweeper=optuna", "hydra.sweeper.custom_search_space=os.system"],
     "hydra.sweeper.custom_search_space='os.system' is not allowed"),
])
def test_plugin_settings_that_run_code_are_refused(argv, fragment):
    plugin = {"slurm": "hydra_plugins.hydra_submitit_launcher", "optuna": "hydra_plugins.hydra_optuna_sweeper"}
    pytest.importorskip(next(p for k, p in plugin.items() if k in argv[0]))
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        check_command_line(argv)


# --- every shipped config passes ------------------------------------------------------------------------------


def _options() -> list[tuple[str, str]]:
    conf = files("mu_lightning.conf")
    out = []
    for group in ("dataset", "model", "forget", "unlearner", "trainer", "logger", "metric", "paths", "experiment",
                  "hparams_search", "poison", "hydra/launcher"):
        folder = conf.joinpath(group)
        if folder.is_dir():
            out += [(group, f.name.removesuffix(".yaml")) for f in folder.iterdir() if f.name.endswith(".yaml")]
    return sorted(out)


@pytest.mark.parametrize("group,option", _options())
def test_every_shipped_config_passes(group, option):
    if group == "hparams_search":
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    if (group, option) == ("hydra/launcher", "slurm"):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    override = f"{group}={option}"
    try:
        cfg = composed(override)
    except ConfigCompositionException:  # a group the primary config does not list by default
        override = f"+{override}"
        cfg = composed(override)
    assert_passes(cfg)
    check_command_line([override])


def test_shipped_launchers_and_sweeps_pass():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    check_command_line(["-m", "hydra/launcher=joblib", "unlearner=none,finetune", "seed=0,1"])
    assert_passes(composed("hydra/launcher=joblib", "+hydra.callbacks.log={_target_: "
                           "hydra.experimental.callbacks.LogJobReturnCallback}"))


# --- the user's own classes ------------------------------------------------------------------------------------


def test_the_user_allowlist_admits_exactly_what_it_names(monkeypatch):
    mine = f"{__name__}.TinyNet"
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match="it lies outside the modules configs may import from"):
        check_target(mine)
    monkeypatch.setenv(ENV, mine)
    assert check_target(mine) is TinyNet
    check_targets(composed(f"model._target_={mine}"))
    for other in (f"{__name__}.write_marker", f"{__name__}.Helper", f"{__name__}.os.system",
                  f"{__name__}.TinyNet.forward"):
        with pytest.raises(ConfigError, match="is not allowed"):
            check_target(other)
    monkeypatch.setenv(ENV, f"{__name__}.*")
    assert check_target(mine) is TinyNet
    for other in (f"{__name__}.write_marker", f"{__name__}.Helper", f"{__name__}.os.system", f"{__name__}.nn.Linear"):
        with pytest.raises(ConfigError, match="is not allowed"):
            check_target(other)
    monkeypatch.setenv(ENV, f"{__name__}.write_marker, {__name__}.TinyNet")
    assert check_target(f"{__name__}.write_marker") is write_marker
    monkeypatch.setenv(ENV, "not a name!")
    with pytest.raises(ConfigError, match=f"{ENV}="):
        check_target(mine)


# --- the attacks, as a user would meet them: python train.py ... ----------------------------------------------


def test_a_payload_through_an_override_does_not_run(tmp_path):
    source, marker = tmp_path / "source.txt", tmp_path / "marker"
    source.write_text("x")
    copy = f"{reach('shutil')}.copyfile"
    out, text, run_dir = train(tmp_path, *SMALL, "~dataset.source",
                               f"+dataset.source={{_target_:{copy},src:'{source}',dst:'{marker}'}}")
    assert_refused(out, text, run_dir, marker, f"dataset.source._target_='{copy}' is not allowed")


def test_a_hydra_callback_does_not_run_at_start_up(tmp_path):
    marker = tmp_path / "marker"
    target = f"{reach('os')}.open"
    out, text, run_dir = train(tmp_path, *SMALL, f"+hydra.callbacks.x={{_target_:{target},path:'{marker}',flags:65}}")
    assert_refused(out, text, run_dir, marker, f"hydra.callbacks.x._target_='{target}' is not allowed")
    assert not run_dir.exists()  # refused before Hydra made the run directory


def test_an_innocent_looking_preset_does_not_unpickle(tmp_path):
    marker, payload = tmp_path / "marker", tmp_path / "digits.pt"
    torch.save({"x": _Payload(marker)}, payload)
    presets = tmp_path / "presets" / "dataset"
    presets.mkdir(parents=True)
    digits = files("mu_lightning.conf").joinpath("dataset", "digits.yaml").read_text()
    load = f"{reach('torch')}.load"
    (presets / "digits_cached.yaml").write_text(digits.replace("name: digits", "name: digits_cached").replace(
        "  _target_: mu_lightning.data.sources.digits\n  _partial_: true\n  num_entities: ${..num_entities}\n"
        "  entity_seed: ${..entity_seed}\n", f"  _target_: {load}\n  f: {payload}\n  weights_only: false\n"))
    assert load in (presets / "digits_cached.yaml").read_text()
    out, text, run_dir = train(tmp_path, "--config-dir", str(tmp_path / "presets"), "dataset=digits_cached",
                               *SMALL[2:])
    assert_refused(out, text, run_dir, marker, f"dataset.source._target_='{load}' is not allowed")


def test_a_preset_cannot_reach_hydras_logging(tmp_path):
    marker, source = tmp_path / "marker", tmp_path / "source.txt"
    source.write_text("x")
    presets = tmp_path / "presets" / "experiment"
    presets.mkdir(parents=True)
    (presets / "quiet.yaml").write_text(
        "# @package _global_\nhydra:\n  hydra_logging:\n    formatters:\n      plain:\n"
        f"        (): shutil.copyfile\n        src: {source}\n        dst: {marker}\n")
    for extra in ([], ["--help"]):  # Hydra applies hydra_logging while composing, even for --help
        out, text, run_dir = train(tmp_path, *extra, "--config-dir", str(tmp_path / "presets"), *SMALL,
                                   "experiment=quiet")
        assert_refused(out, text, run_dir, marker, "hydra.hydra_logging.formatters.plain.()='shutil.copyfile'")


def test_a_users_own_model_runs_once_allowed(tmp_path):
    mine = f"{__name__}.TinyNet"
    out, text, run_dir = train(tmp_path, *SMALL, f"model._target_={mine}", "~model.hidden", env={ENV: ""})
    assert out.returncode == 2 and f"model._target_='{mine}' is not allowed" in text, text[-3000:]
    out, text, run_dir = train(tmp_path, *SMALL, f"model._target_={mine}", "~model.hidden", env={ENV: mine})
    assert out.returncode == 0, text[-3000:]
    assert (run_dir / "results.json").exists()
