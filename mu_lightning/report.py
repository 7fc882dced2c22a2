"""Aggregate run directories into ``summary.csv``, ``summary.md`` and PNG figures: mean and 95 % Student-t interval.

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
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# flop_speedup, then the comparable wall-clock speedup, then the seconds themselves
KNOWN = ("forget_acc", "retain_acc", "test_acc", "avg_gap", "mia_efficacy", "flop_speedup", "speedup",
         "train_seconds")
# keys that do not change what a run computes: never part of a row's identity
IGNORED = ("paths.", "logger.", "callbacks.", "metric.", "cache", "threads", "tags", "task_name", "extras.",
           "save_unlearned")
LABELS = ("dataset", "model", "forget", "unlearner")
# the unlearner catalogue in its documented order (README "Unlearners"); fixes each method's colour in the figures
METHODS = ("none", "finetune", "gradient_ascent", "neggrad_plus", "random_label", "l1_sparse", "fisher", "influence",
           "boundary_shrink", "boundary_expand", "salun", "scrub", "bad_teacher", "ssd", "unsir", "amnesiac", "cf_k",
           "eu_k")
# how ``marks`` ranks a column, by a part of its name: higher is better (speed-ups, agreement with gold, ToW), lower
# is better (gaps, costs, distances to gold); accuracies and MIA scores are best closest to gold; others: no rule
HIGHER = ("speedup", "agreement", "tow")
LOWER = ("gap", "seconds", "flops", "grad_evals", "_kl_", "_js_", "actdist", "weight_dist_gold")
LEVEL = 0.95  # the confidence level of every interval in the tables and figures
TRAJECTORY = ("forget_acc", "retain_acc", "test_acc", "mia_loss_auc")  # logged by callbacks/forget_retain.py


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

    @property
    def setting(self) -> tuple[str, str, str]:
        return tuple(self.labels[k] for k in LABELS[:3])


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
        setting = tuple(rec.labels[k] for k in LABELS[:3])
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
        base = row.labels["unlearner"].split("[", 1)[0]
        rank = (METHODS.index(base) if base in METHODS else len(METHODS), 0.0)
    return row.setting, not row.gold, rank, row.labels["unlearner"], row.tuning


def marks(summary: Summary) -> dict[str, dict[int, str]]:
    """The best unlearner row per column and setting: ``"best"`` when the runner-up lies outside both 95 %
    intervals, else ``"tie"`` for the best and every row whose interval overlaps it. Accuracies and MIA scores are
    judged by their distance to the setting's gold mean (docs/metrics.md §4: closeness to retraining), the rest by
    HIGHER and LOWER. A best with one run (no spread) is not marked; a row with one run ties with any best; a column
    with no rule (or no gold value, where it needs one) is not marked."""
    out: dict[str, dict[int, str]] = defaultdict(dict)
    golds = {row.setting: row for row in summary.rows if row.gold}
    for col in summary.columns:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(summary.rows):
            if not row.gold and row.mean(col) is not None:
                groups[row.setting].append(i)
        for setting, idx in groups.items():
            score = _score(col, golds[setting].mean(col) if setting in golds else None)
            if score is None or len(idx) < 2:
                continue
            scored = sorted(idx, key=lambda i: score(summary.rows[i].mean(col)))
            top = summary.rows[scored[0]]
            if top.half(col) is None:
                continue
            tied = [i for i in scored[1:] if abs(score(summary.rows[i].mean(col)) - score(top.mean(col)))
                    <= top.half(col) + (summary.rows[i].half(col) if summary.rows[i].half(col) is not None
                                        else math.inf)]
            out[col].update({i: "tie" for i in [scored[0], *tied]} if tied else {scored[0]: "best"})
    return out


def markdown(summary: Summary, marked: dict[str, dict[int, str]]) -> str:
    """The known columns as one Markdown table and every other metric as a second one, then how to read them, the
    notes and the figures; summary.csv holds every column, the seeds and the run directories."""
    main = [c for c in summary.columns if c in KNOWN or c == summary.objective]
    other = [c for c in summary.columns if c not in main]
    lines = []
    for cols in (main, other) if other else (main,):
        lines += [*_md_table(summary, marked, cols), ""]
    n_runs = len({id(run) for row in summary.rows if not row.gold for run in row.runs})
    lines.append(f"{n_runs} runs. Cells: mean ± half-width of the {LEVEL:.0%} Student-t interval of the mean over "
                 "n seeds (t · s / √n); with n = 1, the single value and no interval. **Bold**: best in its "
                 "setting, its interval clear of the runner-up's; †: best or tied with it, intervals overlapping. "
                 "Best is closest to gold for accuracies and MIA, lowest for gaps, costs and distances to gold, "
                 "highest for speed-ups and agreement (docs/tracking.md, \"Sweep summaries\").")
    ns = sorted({row.n for row in summary.rows if row.n > 1})
    if ns:
        lines[-1] += " t = " + ", ".join(f"{_t(n):.2f} for n = {n}" for n in ns) + "."
    if summary.objective:
        lines.append(f"Rows sorted by the search objective `{summary.objective}`, best first.")
    lines += [f"- {note}" for note in summary.notes]
    lines += ["", *(f"![{path.stem}]({path.name})" for path in summary.figures)] * bool(summary.figures)
    return "\n".join(lines) + "\n"


def _md_table(summary: Summary, marked: dict[str, dict[int, str]], columns: list[str]) -> list[str]:
    labels = _shown_labels(summary)
    tuning = ["tuning"] * any(r.tuning for r in summary.rows)
    head = [*labels, *tuning, "n", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in columns or h == "n" else "---"
                                                          for h in head) + "|"]
    for i, row in enumerate(summary.rows):
        cells = [row.labels[k] for k in labels] + [row.tuning] * bool(tuning) + [str(row.n)]
        for col in columns:
            text, mark = _fmt(row.mean(col), row.half(col)), marked.get(col, {}).get(i)
            cells.append(f"**{text}**" if mark == "best" else f"{text} †" if mark == "tie" else text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def read_trajectory(run: Path) -> dict[str, dict[int, float]]:
    """The forget/retain trajectory of a run's unlearning stage from ``csv/unlearn/metrics.csv``: for each of
    TRAJECTORY, ``{step: value}`` under ``trajectory/<metric>`` or, failing that, ``unlearn/<metric>`` (the later
    row wins at a step; the final evaluation logs at the last step too). A metric with fewer than two steps (only
    the final evaluation) has no trajectory and is left out."""
    path = run / "csv" / "unlearn" / "metrics.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        lines = list(csv.DictReader(f))
    out = {}
    for metric in TRAJECTORY:
        key = next((k for k in (f"trajectory/{metric}", f"unlearn/{metric}") if lines and k in lines[0]), None)
        points = {int(float(line["step"])): float(line[key]) for line in lines
                  if key and line.get(key) and line.get("step")}
        if len(points) > 1:
            out[metric] = dict(sorted(points.items()))
    return out


def _score(col: str, gold: float | None):
    """How a column ranks rows (lower score is better), or None for a column with no rule."""
    if any(part in col for part in HIGHER):
        return lambda v: -v
    if any(part in col for part in LOWER):
        return lambda v: v
    if gold is not None and (col.endswith("_acc") or col.startswith("mia_")):
        return lambda v: abs(v - gold)
    return None


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
               hydra.get("direction", "minimize"))


def _labels(cfg: dict, choices: dict[str, str], stages: dict, dropped: list[int] = ()) -> dict[str, str]:
    """Row labels; a forget label ends in ``; test without [c]`` when D_test left out the forgotten classes
    (``metric.classwise_test=drop``), so such rows never mix with runs tested on every class."""
    forget = cfg.get("forget", {})
    params = ",".join(f"{k}={v}" for k, v in forget.items() if not k.startswith("_") and not _is_seed(k)
                      and v is not None) + (f"; test without {list(dropped)}" if dropped else "")
    return {"dataset": str(cfg.get("dataset", {}).get("name", choices.get("dataset", "?"))),
            "model": choices.get("model") or str(cfg.get("model", {}).get("_target_", "?")).rsplit(".", 1)[-1],
            "forget": f"{choices.get('forget') or forget.get('_target_', '?').rsplit('.', 1)[-1]}({params})",
            "unlearner": choices.get("unlearner") or stages.get("unlearn", {}).get("method", "?")}


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
    return {"choices": {k: str(v) for k, v in hydra.runtime.choices.items() if v is not None},
            "direction": "maximize" if "max" in direction else "minimize"}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: json.dumps(d) if isinstance(d, list) else d}
    return {k: v for key, val in d.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shown_labels(summary: Summary) -> list[str]:
    """Dataset and model columns only when they vary; forget and unlearner always."""
    return [k for k in LABELS if k in ("forget", "unlearner") or len({r.labels[k] for r in summary.rows}) > 1]


def _fmt(mean: float | None, half: float | None) -> str:
    if mean is None:
        return ""
    spec = ".4f" if abs(mean) < 10 else (".1f" if abs(mean) < 1e4 else ".3g")
    return f"{mean:{spec}}" if half is None else f"{mean:{spec}} ± {half:{spec}}"


def _shown_path(path: Path) -> str:
    """A run directory relative to the working directory when it lies below it, else absolute."""
    rel = os.path.relpath(path.resolve())
    return str(path.resolve()) if rel.startswith("..") else rel


def write_csv(summary: Summary, marked: dict[str, dict[int, str]], path: Path) -> None:
    """Per row: labels, tuning, n, then mean, std and ci95 (the half-width) of every column, the columns where it
    is best or tied, and its runs' seeds and directories (``;`` between runs). Seeds are the keys that vary across
    the summary's runs (``seed`` when none does)."""
    runs = [run for row in summary.rows for run in row.runs]
    varying = sorted(k for k in {k for r in runs for k in r.seeds} if len({repr(r.seeds.get(k)) for r in runs}) > 1)
    stats = ("mean", "std", "ci95")
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*LABELS, "tuning", "n", *(f"{c}_{s}" for c in summary.columns for s in stats), "best", "tied",
                    "seeds", "runs"])
        for i, row in enumerate(summary.rows):
            values = [x for c in summary.columns for x in (row.mean(c), row.std(c), row.half(c))]
            flags = [";".join(c for c in summary.columns if marked.get(c, {}).get(i) == m) for m in ("best", "tie")]
            seeds = ";".join(",".join(f"{k}={r.seeds[k]}" for k in varying or ["seed"] if k in r.seeds)
                             for r in row.runs)
            w.writerow([*(row.labels[k] for k in LABELS), row.tuning, row.n, *("" if x is None else x for x in values),
                        *flags, seeds, ";".join(_shown_path(r.path) for r in row.runs)])
