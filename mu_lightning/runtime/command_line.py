"""Hydra acts on its own settings before the task function runs: ``hydra.hydra_logging`` is applied while the config is
composed (even for ``--help``), ``hydra.callbacks``, ``hydra.launcher`` and ``hydra.sweeper`` are instantiated next,
``hydra.job_logging`` and ``hydra.job.env_set`` take effect before each job. ``check_command_line`` therefore composes
the config from the command line the way Hydra will (``--config-dir``, ``--config-name`` and presets included, and
each value of every sweep on its own) and checks the ``hydra`` subtree before ``hydra.main`` runs. Besides
``_target_``, Hydra's settings can run code through the logging config (``class``, ``()``, and from Python 3.12
``queue`` and ``listener``, name what dictConfig calls, ``ext://`` an object: only logging handlers, formatters,
filters, queues and queue listeners, and ``ext://sys.stdout``/``sys.stderr``),
``hydra.job.env_set`` (only the variables of ``settings.ENV_SET``), ``hydra.launcher.setup`` (shell lines run by
SLURM jobs: refused), the launcher's other strings (no line break or shell character: ``settings.check_launcher``) and
``hydra.sweeper.custom_search_space`` (a function: only one listed in ``MU_LIGHTNING_ALLOW``). ``--experimental-rerun``
unpickles a file and is refused. Every interpolation of the whole config (task and ``hydra``) may use only the
resolvers of ``settings.RESOLVERS``, checked before anything resolves.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from mu_lightning.errors import ConfigError
from mu_lightning.runtime.settings import check_interpolations
from mu_lightning.runtime.targets import UserAllow, _Walker

CONFIG_PATH = "pkg://mu_lightning.conf"  # as in mu_lightning.cli's @hydra.main
CONFIG_NAME = "config"


def check_command_line(argv: Sequence[str] | None = None, *, config_path: str = CONFIG_PATH,
                       config_name: str = CONFIG_NAME, calling_module: str = "mu_lightning.cli") -> None:
    """Before ``hydra.main``: compose the config as Hydra will from ``argv`` (default ``sys.argv[1:]``) and check its
    ``hydra`` subtree, which Hydra acts on before the task function (and its ``check_targets``) runs. Each value of
    each sweep (``-m key=a,b``, ``hydra.sweeper.params``) is composed and checked on its own. A command line that
    Hydra itself would reject (a bad override, an unknown option) is left for Hydra to report."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.experimental_rerun is not None:
        raise ConfigError(f"--experimental-rerun={args.experimental_rerun} is not allowed: it unpickles a file, which "
                          "can run code; run the original command again instead")
    _check_search_path(args.overrides)
    loader = _config_loader(args, calling_module, config_path)
    if loader is None:
        return  # a --config-dir that does not exist: Hydra's own message

    def compose(overrides: list[str]) -> DictConfig | None:
        from hydra.types import RunMode

        try:
            return loader.load_configuration(config_name=args.config_name or config_name, overrides=overrides,
                                             run_mode=RunMode.MULTIRUN, from_shell=True,
                                             validate_sweep_overrides=False)
        except Exception:  # noqa: BLE001 - Hydra reports its own composition errors, before running anything
            return None

    overrides = list(args.overrides)
    cfg = compose(overrides)
    if cfg is None:
        return
    check_interpolations(cfg)  # the whole config, before anything in it resolves (settings.py)
    check_optional_choices(loader, cfg)
    walker = _Walker(UserAllow.from_env())
    with _hydra_config(cfg):
        walker.run(cfg.hydra, "hydra")
    for job in _sweep_jobs(loader, overrides, cfg, compose):
        check_interpolations(job)
        check_optional_choices(loader, job)
        with _hydra_config(job):
            _Walker(walker.allow).run(job.hydra, "hydra")


OPTIONAL_GROUPS = ("experiment", "debug", "hparams_search")  # `optional` in the defaults: a missing option is skipped


def check_optional_choices(loader: Any, cfg: DictConfig) -> None:
    """An option of an ``optional`` group (``experiment=``, ``debug=``, ``hparams_search=``, a protocol's folder)
    names one that exists: Hydra would skip a misspelt one silently and run the defaults."""
    choices = cfg.hydra.runtime.choices
    for group in OPTIONAL_GROUPS:
        choice = choices.get(group)
        if choice is not None:
            _must_be_one_of(f"{group}={choice}", str(choice), loader.get_group_options(group))
    protocol = choices.get("protocol@unlearner")
    folder = str(protocol).split("/", 1)[0] if protocol else None
    if folder and folder != choices.get("dataset"):  # the dataset's own folder may be missing: general values
        _must_be_one_of(f"protocol@unlearner={protocol}", folder, loader.list_groups("protocol"))


def _must_be_one_of(shown: str, name: str, options: list[str]) -> None:
    import difflib

    if name not in options:
        close = difflib.get_close_matches(name, options, n=1)
        raise ConfigError(f"{shown}: there is no such option{f' (did you mean {close[0]}?)' if close else ''}; "
                          f"choose one of {', '.join(sorted(options))}")


def _check_search_path(overrides: list[str]) -> None:
    """``hydra.searchpath`` may name folders (``file://``), not packages: a ``pkg://`` entry is imported while the
    config is composed, before any check could see what it holds."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "hydra.searchpath" and "pkg://" in value:
            raise ConfigError(f"hydra.searchpath={value} is not allowed: a pkg:// entry imports that package before "
                              "anything is checked; give a folder (file://PATH) or use --config-dir PATH")


def _config_loader(args: Any, calling_module: str, config_path: str) -> Any:
    """Hydra's config loader over the search path ``hydra.main`` would build (``--config-dir`` first), or None."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.utils import setup_globals

    search_path = create_automatic_config_search_path(None, calling_module, args.config_path or config_path)
    if args.config_dir is not None:
        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            return None
        search_path.prepend(provider="command-line", path=f"file://{config_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    setup_globals()
    return ConfigLoaderImpl(config_search_path=search_path)


def _sweep_jobs(loader: Any, overrides: list[str], cfg: DictConfig, compose) -> Iterator[DictConfig]:
    """The config of each non-numeric value of each choice sweep (command line and ``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    try:
        parser = OverridesParser.create(config_loader=loader)
        parsed = parser.parse_overrides(overrides)
        params = cfg.hydra.sweeper.get("params") or {}
        swept = parser.parse_overrides([f"{k}={v}" for k, v in params.items()]) if params else []
    except Exception:  # noqa: BLE001 - Hydra reports its own parse errors
        return
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    choices = (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP, ValueType.GLOB_CHOICE_SWEEP)
    for sweep in [o for o in parsed + swept if o.is_sweep_override() and o.value_type in choices]:
        try:
            values = list(sweep.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - range() and interval() sweep numbers
            continue
        for value in values:
            job = None if _is_number(value) else compose(fixed + [f"{sweep.get_key_element()}={value}"])
            if job is not None:
                yield job


def exit_on_unsafe_command_line(argv: Sequence[str] | None = None, **kwargs: Any) -> None:
    """``check_command_line`` for an entry point: a refused command line prints ``error: <message>`` on stderr and
    exits with code 2, before Hydra starts."""
    try:
        check_command_line(argv, **kwargs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def guard_command_line(entry: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for the ``@hydra.main`` entry point: called from the command line (no arguments), it runs
    ``exit_on_unsafe_command_line`` first; a call with arguments (Hydra's ``cfg_passthrough``) goes straight through.
    """

    @functools.wraps(entry)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            exit_on_unsafe_command_line()
        return entry(*args, **kwargs)

    return guarded


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return value.lower() in ("true", "false", "null")
    return True


@contextmanager
def _hydra_config(cfg: DictConfig) -> Iterator[None]:
    """``${hydra:...}`` resolves while the composed config is checked, as it will during the run."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    previous = instance.cfg
    try:
        instance.set_config(cfg)
    except Exception:  # noqa: BLE001 - a config without a usable hydra node: ${hydra:...} stays unresolved
        pass
    try:
        yield
    finally:
        instance.cfg = previous
