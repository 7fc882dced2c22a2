"""What each stage's logger run and each result table is called: stage run names, tags and configs, sweep groups,
the run title and the forget request's label (one spelling, shared by the console table and the sweep report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CHOICES = ("dataset", "model", "forget", "unlearner")  # the config groups that become tags and the W&B name
# the config sections each stage's run records: its own inputs only (original and gold never record the unlearner)
SECTIONS = {"original": ("dataset", "model", "train", "trainer"),
            "gold": ("dataset", "model", "forget", "poison", "train", "trainer"),
            "clean": ("dataset", "model", "poison", "train", "trainer"),
            "unlearn": ("dataset", "model", "forget", "poison", "unlearner", "train", "metric", "trainer",
                        "callbacks")}


@dataclass(frozen=True)
class StageRun:
    """What one stage's logger run is: ``stage`` (``gold``, ``unlearn_request2``, ``gold_seed1``), its display
    ``name``, its own ``config`` (plain values) and ``tags``."""

    stage: str
    name: str
    config: dict
    tags: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``original``, ``gold`` or ``unlearn``: the stage without its request or seed suffix."""
        return self.stage.split("_")[0]


def stage_run(cfg: DictConfig, stage: str, seed: int, key: str | None = None,
              protocol: str | None = None) -> StageRun:
    """The ``StageRun`` of ``stage``: original and gold named by what they are (``original-digits-mlp-s0-314e628f``:
    dataset, model, forget setting for gold, seed, cache key), the unlearning stage by its method and seed
    (``finetune-s0``, plus the ``unlearner.*`` overrides of a sweep job: ``finetune-s0-lr=0.01``). Tags: the config
    choices the stage depends on (``dataset:digits``, ...; ``protocol:<file>`` for the unlearning stage when a
    ``conf/protocol/`` file applied) and ``cfg.tags``."""
    kind = stage.split("_")[0]
    choices = config_choices(cfg)
    used = [c for c in CHOICES if c in SECTIONS[kind]]
    tags = [f"{c}:{choices[c]}" for c in used if choices.get(c)]
    if kind == "unlearn" and protocol:  # the conf/protocol/ file applied over unlearner:, if any
        tags.append(f"protocol:{protocol}")
    config = {"stage": stage, "task_name": cfg.get("task_name"), "seed": seed, "tags": list(cfg.get("tags") or ()),
              "choices": {c: choices.get(c) for c in used},
              **{k: _plain(cfg.get(k)) for k in SECTIONS[kind] if k in cfg}}
    if kind == "unlearn":
        config["unlearn_seed"] = cfg.get("unlearn_seed")
        method = [f"{choices.get('unlearner')}-s{cfg.seed}", *swept_options("unlearner.")]
        name = "-".join(method) + stage[len("unlearn"):]  # + _request2
    else:
        config["cache_key"] = key
        setting = [choices.get("dataset"), choices.get("model"), *([choices.get("forget")] if kind == "gold" else [])]
        name = "-".join(str(part) for part in [stage, *setting, f"s{seed}", (key or "")[:8]] if part)
    return StageRun(stage, name, config, tuple(dict.fromkeys([*tags, *map(str, cfg.get("tags") or ())])))


def config_choices(cfg: DictConfig) -> dict[str, str]:
    """The options chosen for ``CHOICES``: Hydra's record of them; without Hydra, or where the command line set the
    group's ``_target_`` (``model._target_=my.Net``: not the option's model any more), the targets' class names."""
    from hydra.core.hydra_config import HydraConfig

    recorded = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    for group in retargeted(list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []):
        recorded.pop(group, None)
    found = {c: recorded.get(c) or _target_name(cfg.get(c)) for c in CHOICES}
    found["dataset"] = recorded.get("dataset") or OmegaConf.select(cfg, "dataset.name")
    return found


def retargeted(overrides: list[str]) -> set[str]:
    """The config groups whose ``_target_`` an override sets (``model._target_=my.Net`` → ``model``): their recorded
    choice no longer names what ran."""
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    return {k.rsplit(".", 1)[0] for k in keys if k.endswith("._target_") and k.count(".") == 1}


def swept_options(prefix: str) -> list[str]:
    """``key=value`` for each command-line override under ``prefix`` (``unlearner.lr=0.01`` gives ``lr=0.01``): the
    hyperparameters a sweep job sets; empty without Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o.lstrip("+~")[len(prefix):] for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith(prefix)]


def sweep_group(path: str | Path) -> str:
    """The W&B group of a run or sweep directory: its last two parts (``<date>/<time>``)."""
    return "/".join(Path(path).resolve().parts[-2:])


def default_group(save_dir: str) -> str:
    """The sweep's group for a sweep job (all its jobs and stages side by side), else the run's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_group(HydraConfig.get().sweep.dir)
    return sweep_group(save_dir)


def run_title(cfg: DictConfig) -> str:
    """The method, forget setting and seeds of a run, for the title of its result table:
    ``finetune on digits/mlp, forget random(fraction=0.1), seed 0``."""
    choices = config_choices(cfg)
    seeds = f"seed {cfg.seed}" + ("" if cfg.get("unlearn_seed", cfg.seed) == cfg.seed else
                                  f", unlearn_seed {cfg.unlearn_seed}")
    given = OmegaConf.select(cfg, "unlearned.checkpoint")  # eval.py: M_u was made elsewhere
    method = f"unlearned.checkpoint={given}" if given else choices.get("unlearner")
    return (f"{method} on {choices.get('dataset')}/{choices.get('model')}, forget "
            f"{forget_label(_plain(cfg.get('forget')) or {}, choices.get('forget'))}, {seeds}")


def forget_label(forget: dict[str, Any], choice: str | None = None) -> str:
    """A forget request as the result table and the sweep report name it: the ``forget=`` choice (else the
    selector's name) and its settings but seeds and unset ones, ``random(fraction=0.1)``."""
    name = choice or str(forget.get("_target_", "?")).rsplit(".", 1)[-1]
    params = ",".join(f"{k}={v}" for k, v in forget.items()
                      if not str(k).startswith("_") and not str(k).endswith("seed") and v is not None)
    return f"{name}({params})"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _target_name(node: Any) -> str | None:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return target.rsplit(".", 1)[-1] if target else None
