"""Aggregate run directories into ``summary.csv``, ``summary.md`` and PNG plots: mean ± std over seeds.

A row is one unlearner under one forget setting; runs that differ only in keys ending in ``seed`` are its samples.
Each setting's gold row comes first, averaged over distinct gold models (deduplicated by stage-cache key, since a
sweep shares one gold per seed). Columns are every ``unlearn/<metric>`` (``gold/<metric>`` for gold) that
results.json holds, the known ones first; ``train_seconds`` (unlearning time; retraining time for gold) and
``speedup`` (gold training seconds / unlearning seconds, Jia et al. 2023's RTE comparison) are derived from the
timings when the metrics lack them. A run directory without results.json did not complete and is skipped with a note.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KNOWN = ("forget_acc", "retain_acc", "test_acc", "avg_gap", "mia_efficacy", "train_seconds", "speedup")
IGNORED = ("paths.", "logger.", "callbacks.", "metric.", "cache")  # do not change what a run computes
LABELS = ("dataset", "model", "forget", "unlearner")


@dataclass
class Row:
    """One table row: its labels, the values of each metric over its runs, and the runs it came from."""

    labels: dict[str, str]
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    gold: bool = False

    def mean(self, metric: str) -> float | None:
        v = self.values.get(metric)
        return statistics.fmean(v) if v else None

    def std(self, metric: str) -> float | None:
        v = self.values.get(metric)
        return (statistics.stdev(v) if len(v) > 1 else 0.0) if v else None

    @property
    def n(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)


@dataclass
class Summary:
    rows: list[Row]
    columns: list[str]
    notes: list[str]


def find_runs(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories under ``paths`` (a run dir, a sweep dir or any folder above them) and notes on failed ones.

    A run dir holds ``results.json``; a Hydra job dir (``.hydra/``) without it is a failed or unfinished job.
    """
    runs, notes = [], []
    for path in map(Path, paths):
        if not path.exists():
            notes.append(f"{path}: does not exist")
            continue
        for marker in sorted({*path.rglob("results.json"), *path.rglob(".hydra")}):
            run = marker.parent
            if (run / "results.json").exists():
                runs.append(run)
            else:
                notes.append(f"{run}: no results.json (failed or unfinished job), skipped")
    return sorted(set(runs)), sorted(set(notes))


def summarize(runs: list[Path], notes: list[str] = ()) -> Summary:
    """Group runs into rows (gold first per setting) and pick the columns."""
    records = [_record(run) for run in runs]
    _disambiguate(records)
    rows: dict[tuple, Row] = {}
    golds_seen: set[tuple] = set()
    for rec in records:
        setting = tuple(rec["labels"][k] for k in LABELS[:3])
        gold = rows.setdefault((setting, ""), Row(dict(zip(LABELS, (*setting, "gold"), strict=True)), gold=True))
        if (setting, rec["gold_id"]) not in golds_seen:
            golds_seen.add((setting, rec["gold_id"]))
            for k, v in rec["gold"].items():
                gold.values[k].append(v)
        row = rows.setdefault((setting, rec["labels"]["unlearner"]), Row(rec["labels"]))
        for k, v in rec["unlearn"].items():
            row.values[k].append(v)
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1] != "", k[1]))]
    found = {m for r in ordered for m in r.values}
    columns = [m for m in KNOWN if m in found] + sorted(found - set(KNOWN))
    return Summary(ordered, columns, list(notes))


def best(summary: Summary) -> dict[str, set[int]]:
    """Indices of the best unlearner row per column and setting. Accuracies and MIA efficacy are judged by their
    distance to the setting's gold mean (docs/metrics.md §4: closeness to retraining, not "higher is better"), gaps
    and times by the lowest value, speed-up by the highest; a column with neither rule nor gold value is not marked."""
    marks: dict[str, set[int]] = defaultdict(set)
    for col in summary.columns:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(summary.rows):
            if not row.gold and row.mean(col) is not None:
                groups[tuple(row.labels[k] for k in LABELS[:3])].append(i)
        for setting, idx in groups.items():
            gold = next(r for r in summary.rows if r.gold and tuple(r.labels[k] for k in LABELS[:3]) == setting)
            score = _score(col, gold.mean(col))
            if score is None or len(idx) < 2:
                continue
            top = min(score(summary.rows[i].mean(col)) for i in idx)
            marks[col] |= {i for i in idx if math.isclose(score(summary.rows[i].mean(col)), top, abs_tol=1e-12)}
    return marks


def write(paths: list[str | Path], out: str | Path) -> Summary:
    """Find runs under ``paths``, write summary.csv, summary.md and plots into ``out``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, notes = find_runs(paths)
    summary = summarize(runs, notes)
    marks = best(summary)
    _write_csv(summary, marks, out / "summary.csv")
    from mu_lightning import report_plots  # matplotlib only when plotting

    summary.notes.extend(report_plots.write_all(summary, out))
    (out / "summary.md").write_text(markdown(summary, marks, len(runs)))
    return summary


def markdown(summary: Summary, marks: dict[str, set[int]], n_runs: int) -> str:
    """The known columns as one Markdown table and every other metric as a second one (best values in bold),
    followed by the notes; summary.csv holds all columns."""
    known = [c for c in summary.columns if c in KNOWN]
    other = [c for c in summary.columns if c not in KNOWN]
    lines = []
    for cols in (known, other) if other else (known,):
        lines += [*_md_table(summary, marks, cols), ""]
    lines.append(f"{n_runs} runs; mean ± std over seeds; **bold**: best per column (see mu_lightning/report.py).")
    lines += [f"- {note}" for note in summary.notes]
    return "\n".join(lines) + "\n"


def _md_table(summary: Summary, marks: dict[str, set[int]], columns: list[str]) -> list[str]:
    labels = _shown_labels(summary)
    head = [*labels, "n", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in labels else "---:" for h in head) + "|"]
    for i, row in enumerate(summary.rows):
        cells = [row.labels[k] for k in labels] + [str(row.n)]
        for col in columns:
            text = _fmt(row.mean(col), row.std(col))
            cells.append(f"**{text}**" if i in marks.get(col, ()) else text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _score(col: str, gold: float | None):
    if col == "speedup":
        return lambda v: -v
    if "gap" in col or col.endswith("seconds"):
        return lambda v: v
    return None if gold is None else (lambda v: abs(v - gold))


def _record(run: Path) -> dict[str, Any]:
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
    choices = _choices(run)
    forget = cfg.get("forget", {})
    params = ",".join(f"{k}={v}" for k, v in forget.items() if not k.startswith("_") and not k.endswith("seed")
                      and v is not None)
    labels = {"dataset": str(cfg.get("dataset", {}).get("name", choices.get("dataset", "?"))),
              "model": choices.get("model") or str(cfg.get("model", {}).get("_target_", "?")).rsplit(".", 1)[-1],
              "forget": f"{choices.get('forget') or forget.get('_target_', '?').rsplit('.', 1)[-1]}({params})",
              "unlearner": choices.get("unlearner") or stages.get("unlearn", {}).get("method", "?")}
    flat = {k: v for k, v in _flatten(cfg).items() if not k.rsplit(".", 1)[-1].endswith("seed")
            and not k.startswith(IGNORED)}
    return {"labels": labels, "unlearn": unlearn, "gold": gold, "flat": flat,
            "gold_id": stages.get("gold", {}).get("cache_key") or str(run)}


def _disambiguate(records: list[dict]) -> None:
    """Runs with the same labels but different configs (say, two learning rates) get the differing keys appended."""
    by_label: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        by_label[tuple(rec["labels"].values())].append(rec)
    for recs in by_label.values():
        keys = sorted(k for k in set().union(*(r["flat"] for r in recs)) if len({repr(r["flat"].get(k))
                                                                                   for r in recs}) > 1)
        for rec in recs:
            if keys:
                rec["labels"]["unlearner"] += "[" + ",".join(f"{k}={rec['flat'].get(k)}" for k in keys) + "]"


def _choices(run: Path) -> dict[str, str]:
    """Hydra's config-group choices of a job (``finetune`` rather than the class name), when recorded."""
    path = run / ".hydra" / "hydra.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    choices = OmegaConf.load(path).hydra.runtime.choices
    return {k: str(v) for k, v in choices.items() if v is not None}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: json.dumps(d) if isinstance(d, list) else d}
    return {k: v for key, val in d.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shown_labels(summary: Summary) -> list[str]:
    """Dataset and model columns only when they vary; forget and unlearner always."""
    return [k for k in LABELS if k in ("forget", "unlearner") or len({r.labels[k] for r in summary.rows}) > 1]


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    spec = ".4f" if abs(mean) < 10 else (".1f" if abs(mean) < 1e4 else ".3g")
    return f"{mean:{spec}} ± {std:{spec}}"


def _write_csv(summary: Summary, marks: dict[str, set[int]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*LABELS, "n", *(f"{c}_{s}" for c in summary.columns for s in ("mean", "std")), "best"])
        for i, row in enumerate(summary.rows):
            stats = [x for c in summary.columns for x in (row.mean(c), row.std(c))]
            w.writerow([*(row.labels[k] for k in LABELS), row.n, *("" if x is None else x for x in stats),
                        ";".join(c for c in summary.columns if i in marks.get(c, ()))])
