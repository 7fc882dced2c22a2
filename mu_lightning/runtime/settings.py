"""What a config may do besides naming targets (``targets.py``): which interpolation resolvers it may use, which
environment variables ``hydra.job.env_set`` may set, and what launcher options that reach a shell may hold.

- Resolvers: only those in ``RESOLVERS`` (plain ``${a.b}`` interpolation is always allowed). ``oc.decode`` and
  ``oc.create`` make config nodes out of text at resolve time, ``oc.env`` reads the environment (an API key sent
  along with a logger's config): a config cannot use them. Every string of the config is checked before anything
  resolves, ``hydra.*`` and presets included (``check_interpolations``, ``check_resolvers``).
- ``hydra.job.env_set``: only the variables of ``ENV_SET``, each with the values its pattern allows. Anything else
  (torch's safe-loading switches, W&B's host, key or online mode, the loader's and Python's search paths) can only
  be set in the user's own shell.
- ``hydra.launcher.*``: the SLURM launcher writes its options into an sbatch script; no string there (key or value)
  may hold a line break or a shell character (``SHELL_CHARS``).
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, ListConfig

from mu_lightning.errors import ConfigError

# resolver -> what it does; all read the config itself, the clock or Hydra's own settings, none builds nodes
RESOLVERS = {
    "hydra": "Hydra's settings (${hydra:runtime.cwd})",
    "now": "the date and time (${now:%Y-%m-%d})",
    "oc.select": "another option, with a default (${oc.select:dataset.input_range,null})",
    "oc.dict.keys": "the keys of another option",
    "oc.dict.values": "the values of another option",
    "mu_eval_dir": "eval.py's run directory",
}

# hydra.job.env_set: variable -> the values a config may give it (regular expression)
ENV_SET = {
    "CUDA_VISIBLE_DEVICES": r"[A-Za-z0-9,\-]*",
    "OMP_NUM_THREADS": r"\d+",
    "MKL_NUM_THREADS": r"\d+",
    "OPENBLAS_NUM_THREADS": r"\d+",
    "NUMEXPR_NUM_THREADS": r"\d+",
    "TOKENIZERS_PARALLELISM": r"true|false",
    "CUBLAS_WORKSPACE_CONFIG": r":\d+:\d+",
    "PYTORCH_CUDA_ALLOC_CONF": r"[A-Za-z0-9_:.,]*",
    "NCCL_DEBUG": r"[A-Z]*",
    "NCCL_P2P_DISABLE": r"[01]",
    "NCCL_IB_DISABLE": r"[01]",
    "HYDRA_FULL_ERROR": r"[01]",
    "WANDB_MODE": r"offline|disabled|dryrun",
    "WANDB_SILENT": r"true|false",
}

SHELL_CHARS = re.compile(r"[\n\r;&|$`<>\\'\"()]")


def check_resolvers(where: str, raw: str) -> None:
    """The interpolation ``raw`` (the unresolved text of ``where``) uses only allowed resolvers; ConfigError
    otherwise, and for text OmegaConf cannot parse."""
    from omegaconf.errors import GrammarParseError

    try:
        names = resolver_names(raw)
    except GrammarParseError as err:
        raise ConfigError(f"{where}={raw!r} is not a valid interpolation ({str(err).splitlines()[0]})") from None
    for name in names:
        if name not in RESOLVERS:
            raise ConfigError(f"{where}={raw!r} is not allowed: the resolver {name} is not one a config may use "
                              f"(allowed: plain ${{a.b}} interpolation and {', '.join(RESOLVERS)}); give the value "
                              "itself, on the command line if it comes from your environment")


def resolver_names(raw: str) -> list[str]:
    """The resolvers (``oc.env``, ``hydra``, ...) an interpolation string calls, nested ones included."""
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
    from omegaconf.grammar_parser import parse

    stack, names = [parse(raw)], []
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            names.append(node.resolverName().getText())
        stack.extend(getattr(node, "children", None) or [])
    return names


def check_interpolations(node: Any, path: str = "") -> None:
    """``check_resolvers`` on every interpolation below ``node``, without resolving anything."""
    if not isinstance(node, DictConfig | ListConfig) or node._is_none() or node._is_missing():
        return
    if node._is_interpolation():
        check_resolvers(path, str(node._value()))
        return
    # Hydra's record of the command line (hydra.overrides) last: a refusal names the option the text was given for
    keys = sorted(node.keys(), key=lambda k: k in ("hydra", "overrides")) if isinstance(node, DictConfig) \
        else range(len(node))
    for key in keys:
        where = f"{path}[{key}]" if isinstance(node, ListConfig) else f"{path}.{key}" if path else str(key)
        child = node._get_node(key)
        if child is not None and child._is_interpolation():
            check_resolvers(where, str(child._value()))
        elif isinstance(child, DictConfig | ListConfig):
            check_interpolations(child, where)


def check_env_set(where: str, key: Any, value: Any) -> None:
    """One ``hydra.job.env_set`` entry: a variable of ``ENV_SET`` with a value its pattern allows."""
    name = str(key)
    if name not in ENV_SET:
        raise ConfigError(f"{where} is not allowed: a config may set only {', '.join(ENV_SET)} (variables such as "
                          "W&B's host and key or torch's safe-loading switches only from your own shell)")
    if value is not None and not re.fullmatch(ENV_SET[name], str(value)):
        raise ConfigError(f"{where}={value!r} is not allowed: a config may set {name} only to values matching "
                          f"{ENV_SET[name]}; set it in your own shell instead")


def check_launcher(where: str, key: Any, value: Any) -> None:
    """A ``hydra.launcher`` key or string value with no line break or shell character."""
    for text in (str(key), value if isinstance(value, str) else ""):
        found = SHELL_CHARS.search(text)
        if found:
            raise ConfigError(f"{where}={value!r} is not allowed: launcher options are written into a shell script "
                              f"(SLURM's sbatch file), and {'its key' if text == str(key) else 'it'} holds "
                              f"{found.group()!r} (a line break or shell character); give a plain value")
