"""Read run directories and group them into a ``Summary``: rows of mean and 95 % Student-t interval per metric.

A row is one unlearner under one forget setting (dataset, model, forget request); runs that differ only in keys
ending in ``seed`` are its samples. Each setting's gold row comes first, averaged over distinct gold models (by
stage-cache key, since a sweep shares one gold per seed). Columns are every ``unlearn/<metric>`` (``gold/<metric>``
for gold) that results.json holds, the known ones first; ``train_seconds`` (unlearning time; retraining time for
gold) and ``speedup`` (gold training seconds / unlearning seconds, Jia et al. 2023's RTE comparison) are derived from
the timings when the metrics lack them. A run directory without results.json did not complete and is skipped with a
note; a run with the same config and seeds as another (a copied directory, one found twice, a re-run) counts once.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mu_lightning.tracking.naming import forget_label, retargeted

# flop_speedup, then the comparable wall-clock speedup, then the seconds themselves
KNOWN = ("forget_acc", "retain_acc", "test_acc", "avg_gap", "mia_efficacy", "flop_speedup", "speedup",
         "train_seconds", "klom_forget", "klom_forget_p95")  # KLoM (metric=ensemble): its mean, then its tail
# keys that do not change what a run computes: never part of a row's identity
IGNORED = ("paths.", "logger.", "callbacks.", "metric.", "cache", "threads", "tags", "task_name", "extras.",
           "save_unlearned")
LABELS = ("dataset", "model", "forget", "budget", "unlearner")  # all but the unlearner: the setting
LEVEL = 0.95  # the confidence level of every interval in the tables and figures
TRAJECTORY = ("forget_acc", "retain_acc", "mia_loss_auc")  # the trajectory/ keys callbacks/forget_retain.py logs
# the kinds of results.json's warnings (docs/metrics.md §9) that concern the setting, not the unlearner: the gold row
# shows these alone, and the figures mark a method only for the others ("no effect", "damaged", ...)
SETTING_WARNINGS = ("original does not memorise", "uninformative attack")
BASELINE = "none"  # the do-nothing unlearner (M_u = M): a reference in the figures, never "best" in the tables


def catalogue() -> tuple[str, ...]:
    """The unlearners, in the order reports list them and colour them: ``none`` (the do-nothing baseline) first, then
    every ``conf/unlearner/*.yaml`` by name. The config group is the list: a new method file joins it by itself."""
    from importlib import resources

    names = sorted(p.name[:-5] for p in (resources.files("mu_lightning.conf") / "unlearner").iterdir()
                   if p.name.endswith(".yaml"))
    return tuple(sorted(names, key=lambda name: name != "none"))


def half_width(values: list[float]) -> float | None:
    """Half-width of the two-sided 95 % Student-t interval of the mean, t · s / √n; None for n < 2."""
    return _t(len(values)) * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def _t(n: int) -> float:
    """t_{(1 + LEVEL) / 2, n - 1}, the Student-t quantile of a two-sided interval over n values."""
    from scipy.stats import t  # scipy comes with scikit-learn

    return float(t.ppf((1 + LEVEL) / 2, n - 1))


@dataclass
class Run:
    """One completed run directory, as the report reads it."""

    path: Path
    labels: dict[str, str]
    unlearn: dict[str, float]
    gold: dict[str, float]
    flat: dict[str, Any]  # the config without seeds and IGNORED keys
    seeds: dict[str, Any]
    gold_id: str
    tuning: str = ""
    objective: str = ""  # the unlearn metric a hyperparameter search minimised or maximised
    direction: str = "minimize"
    warnings: list[str] = field(default_factory=list)  # results.json's findings (docs/metrics.md §9)


@dataclass
class Row:
    """One table row: its labels, the values of each metric over its runs, and the runs it came from."""

    labels: dict[str, str]
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    gold: bool = False
    tuning: str = ""
    runs: list[Run] = field(default_factory=list)

    def mean(self, metric: str) -> float | None:
        v = self.values.get(metric)
        return statistics.fmean(v) if v else None

    def half(self, metric: str) -> float | None:
        """Half-width of the 95 % t-interval of ``metric``'s mean (None: one value, no spread)."""
        return half_width(self.values.get(metric, []))

    def std(self, metric: str) -> float | None:
        v = self.values.get(metric, [])
        return statistics.stdev(v) if len(v) > 1 else None

    @property
    def n(self) -> int:
        return len(self.runs)

    def warning_counts(self) -> dict[str, int]:
        """How many of the row's runs carry each kind of warning (``warning_kind``), in order of first appearance;
        the gold row counts only the SETTING_WARNINGS."""
        counts: dict[str, int] = {}
        for run in self.runs:
            for kind in dict.fromkeys(map(warning_kind, run.warnings)):
                if not self.gold or kind in SETTING_WARNINGS:
                    counts[kind] = counts.get(kind, 0) + 1
        return counts

    def warning_text(self) -> str:
        """The warnings cell: ``no effect (3/3); damaged (1/3)``, empty without any."""
        return "; ".join(f"{kind} ({k}/{self.n})" for kind, k in self.warning_counts().items())

    @property
    def warned(self) -> bool:
        """Whether a run of this unlearner row carries a warning about the method itself (not SETTING_WARNINGS)."""
        return not self.gold and any(kind not in SETTING_WARNINGS for kind in self.warning_counts())

    @property
    def baseline(self) -> bool:
        """The do-nothing baseline's row (``unlearner=none``, M_u = M): a reference, not a contender."""
        return not self.gold and self.labels["unlearner"].split("[", 1)[0] == BASELINE

    @property
    def setting(self) -> tuple[str, ...]:
        return tuple(self.labels[k] for k in LABELS[:-1])


@dataclass
class Summary:
    rows: list[Row]
    columns: list[str]
    notes: list[str]
    objective: str = ""  # set when every run was part of a search with this objective (rows sorted by it)
    files: list[Path] = field(default_factory=list)  # what summarise wrote: summary.csv, summary.md, then figures

    @property
    def figures(self) -> list[Path]:
        return [f for f in self.files if f.suffix == ".png"]


def find_runs(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories under ``paths`` (a run dir, a sweep dir or any folder above them) and notes on failed ones.

    A run dir holds ``results.json``; a Hydra job dir (``.hydra/``) without it is a failed or unfinished job. A
    directory reached through two paths (``sweep`` and ``sweep/0``, a symbolic link) is listed once.
    """
    runs, notes = {}, []
    for path in map(Path, paths):
        if not path.exists():
            notes.append(f"{path}: does not exist")
            continue
        for marker in sorted({*path.rglob("results.json"), *path.rglob(".hydra")}):
            run = marker.parent
            if (run / "results.json").exists():
                runs.setdefault(run.resolve(), run)
            else:
                notes.append(f"{run}: no results.json (failed or unfinished job), skipped")
    return sorted(runs.values()), sorted(set(notes))


def read_runs(paths: list[Path], notes: list[str]) -> list[Run]:
    """Each run's record, once per (config, seeds): a duplicate is noted and left out."""
    seen: dict[str, Path] = {}
    records = []
    for path in paths:
        run = _record(path)
        identity = json.dumps([run.flat, run.seeds, run.tuning], sort_keys=True, default=str)
        if identity in seen:
            notes.append(f"{path}: same config and seeds as {seen[identity]} (a copy or a re-run), counted once")
            continue
        seen[identity] = path
        records.append(run)
    return records


def aggregate(paths: list[Path], notes: list[str] = ()) -> Summary:
    """Group the runs at ``paths`` into rows (gold first per setting) and pick the columns."""
    notes = list(notes)
    records = read_runs(paths, notes)
    _disambiguate(records)
    rows: dict[tuple, Row] = {}
    golds_seen: set[tuple] = set()
    for rec in records:
        setting = tuple(rec.labels[k] for k in LABELS[:-1])
        gold = rows.setdefault((setting, ""), Row(dict(zip(LABELS, (*setting, "gold"), strict=True)), gold=True))
        if (setting, rec.gold_id) not in golds_seen:
            golds_seen.add((setting, rec.gold_id))
            gold.runs.append(rec)
            for k, v in rec.gold.items():
                gold.values[k].append(v)
        row = rows.setdefault((setting, rec.labels["unlearner"], rec.tuning), Row(rec.labels, tuning=rec.tuning))
        row.runs.append(rec)
        for k, v in rec.unlearn.items():
            row.values[k].append(v)
    objectives = {(r.objective, r.direction) for r in records}
    objective, direction = objectives.pop() if len(objectives) == 1 else ("", "minimize")
    ordered = sorted(rows.values(), key=lambda r: _order(r, objective, direction))
    found = {m for r in ordered for m in r.values}
    columns = [objective] * (objective in found) + [m for m in KNOWN if m in found and m != objective]
    return Summary(ordered, columns + sorted(found - set(columns)), notes, objective)


def _order(row: Row, objective: str, direction: str) -> tuple:
    """Gold first in its setting; then by the search objective (best first), or in catalogue order."""
    if objective:
        value = row.mean(objective)
        rank = (value is None, 0.0 if value is None else value * (-1 if direction == "maximize" else 1))
    else:
        base, methods = row.labels["unlearner"].split("[", 1)[0], catalogue()
        rank = (methods.index(base) if base in methods else len(methods), 0.0)
    return row.setting, not row.gold, rank, row.labels["unlearner"], row.tuning


def warning_kind(message: str) -> str:
    """The tag a warning starts with, after a ``request2: `` label (``"no effect: M_u's …"`` → ``no effect``:
    mu_lightning/metrics/warnings.py ``KINDS``); ``other`` for an untagged one (results of older versions)."""
    found = re.match(r"(?:request\d+: )?([a-z][a-z ]*[a-z]): ", message)
    return found.group(1) if found else "other"


def read_trajectory(run: Path) -> dict[str, dict[int, float]]:
    """The forget/retain trajectory of a run's unlearning stage: for each of TRAJECTORY, ``{step: value}`` under
    ``trajectory/<metric>`` (the later row wins at a step), from ``trajectory/unlearn.csv`` (what the run logged,
    whatever its loggers: tracking/trajectory.py), else from the CSV logger's ``csv/unlearn/metrics.csv`` (runs
    before that file). A metric with fewer than two points has no trajectory and is left out."""
    path = next((p for p in (run / "trajectory" / "unlearn.csv", run / "csv" / "unlearn" / "metrics.csv")
                 if p.exists()), None)
    if path is None:
        return {}
    with path.open(newline="") as f:
        lines = list(csv.DictReader(f))
    out = {}
    for metric in TRAJECTORY:
        key = f"trajectory/{metric}"
        points = {int(float(line["step"])): float(line[key]) for line in lines if line.get(key) and line.get("step")}
        if len(points) > 1:
            out[metric] = dict(sorted(points.items()))
    return out


def _record(run: Path) -> Run:
    res = json.loads((run / "results.json").read_text())
    metrics, seconds, stages = res.get("metrics", {}), res.get("seconds", {}), res.get("stages", {})
    unlearn = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("unlearn/") and _num(v)}
    gold = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("gold/") and _num(v)}
    retrain, took = stages.get("gold", {}).get("fit_seconds"), seconds.get("unlearn")
    if _num(took):
        unlearn.setdefault("train_seconds", took)
        if _num(retrain) and took > 1e-3:  # below a millisecond there was nothing to time
            unlearn.setdefault("speedup", retrain / took)
    if _num(retrain):
        gold.setdefault("train_seconds", retrain)
    cfg = res.get("config", {})
    flat = {k: v for k, v in _flatten(cfg).items() if not k.startswith(IGNORED)}
    objective, hydra = str(cfg.get("objective") or ""), _hydra(run)
    return Run(run, _labels(cfg, hydra.get("choices", {}), stages, res.get("dropped_test_classes") or []),
               unlearn, gold, {k: v for k, v in flat.items() if not _is_seed(k) and k not in ("tuning", "objective")},
               {k: v for k, v in flat.items() if _is_seed(k)},
               stages.get("gold", {}).get("cache_key") or str(run), str(res.get("tuning") or cfg.get("tuning") or ""),
               objective.split("/", 1)[1] if objective.startswith("unlearn/") else "",
               hydra.get("direction", "minimize"), [str(w) for w in res.get("warnings") or []])


def _labels(cfg: dict, choices: dict[str, str], stages: dict, dropped: list[int] = ()) -> dict[str, str]:
    """Row labels; a forget label ends in ``; test without [c]`` when D_test left out the forgotten classes
    (``metric.classwise_test=drop``), so such rows never mix with runs tested on every class."""
    forget = cfg.get("forget", {})
    label = forget_label(forget, choices.get("forget"))
    if dropped:
        label = f"{label[:-1]}; test without {list(dropped)})"
    return {"dataset": str(cfg.get("dataset", {}).get("name", choices.get("dataset", "?"))),
            "model": choices.get("model") or str(cfg.get("model", {}).get("_target_", "?")).rsplit(".", 1)[-1],
            "forget": label, "budget": budget_label(cfg),
            "unlearner": choices.get("unlearner") or stages.get("unlearn", {}).get("method", "?")}


def budget_label(cfg: dict) -> str:
    """The run's compute budget (``budget.flops``, docs/metrics.md §5), part of its row's setting, so rows at different
    budgets are never compared; "" without one."""
    fraction = (cfg.get("budget") or {}).get("flops")
    return "" if fraction is None else f"{fraction:g}× gold FLOPs"


def _is_seed(key: str) -> bool:
    return key.rsplit(".", 1)[-1].endswith("seed")


def _disambiguate(records: list[Run]) -> None:
    """Runs with the same labels but different configs (two learning rates, an Optuna study's trials) get the keys
    that differ appended by their shortest unambiguous name, values to as few digits as keep the rows apart."""
    by_label: dict[tuple, list[Run]] = defaultdict(list)
    for rec in records:
        by_label[tuple(rec.labels.values())].append(rec)
    for recs in by_label.values():
        keys = sorted(k for k in set().union(*(r.flat for r in recs)) if len({repr(r.flat.get(k))
                                                                                   for r in recs}) > 1)
        if not keys:
            continue
        names, distinct = _short_names(keys), len({repr([r.flat.get(k) for k in keys]) for r in recs})
        for digits in range(3, 18):
            tags = ["[" + ",".join(f"{names[k]}={_short(r.flat.get(k), digits)}" for k in keys) + "]" for r in recs]
            if len(set(tags)) == distinct:
                break
        for rec, tag in zip(recs, tags, strict=True):
            rec.labels["unlearner"] += tag


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part (``unlearner.optimizer.lr`` → ``lr``), longer where two would clash."""
    depth = 1
    while True:
        names = {k: ".".join(k.split(".")[-depth:]) for k in keys}
        if len(set(names.values())) == len(keys):
            return names
        depth += 1


def _short(value: Any, digits: int) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _hydra(run: Path) -> dict[str, Any]:
    """Hydra's config-group choices of a job (``finetune`` rather than the class name) and the sweeper's
    optimisation direction, when recorded."""
    path = run / ".hydra" / "hydra.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    hydra = OmegaConf.load(path).hydra
    direction = str(OmegaConf.select(hydra, "sweeper.direction", default="minimize")).lower()
    moved = retargeted([str(o) for o in OmegaConf.select(hydra, "overrides.task", default=[]) or []])
    return {"choices": {k: str(v) for k, v in hydra.runtime.choices.items() if v is not None and k not in moved},
            "direction": "maximize" if "max" in direction else "minimize"}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: json.dumps(d) if isinstance(d, list) else d}
    return {k: v for key, val in d.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
