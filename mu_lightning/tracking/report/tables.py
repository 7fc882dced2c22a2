"""The summary's tables: which row is best per column (``marks``), ``summary.md`` and ``summary.csv``."""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path

from mu_lightning.tracking.report.runs import KNOWN, LABELS, LEVEL, Summary, _t

# how ``marks`` ranks a column, by a part of its name: higher is better (speed-ups, agreement with gold, ToW), lower
# is better (gaps, costs, distances to gold); accuracies and MIA scores are best closest to gold; others: no rule
HIGHER = ("speedup", "agreement", "tow")
LOWER = ("gap", "seconds", "flops", "grad_evals", "_kl_", "_js_", "actdist", "weight_dist_gold", "klom_")


def marks(summary: Summary) -> dict[str, dict[int, str]]:
    """The best unlearner row per column and setting: ``"best"`` when the runner-up lies outside both 95 %
    intervals, else ``"tie"`` for the best and every row whose interval overlaps it. Accuracies and MIA scores are
    judged by their distance to the setting's gold mean (docs/metrics.md §4: closeness to retraining), the rest by
    HIGHER and LOWER. A best with one run (no spread) is not marked; a row with one run ties with any best; a column
    with no rule (or no gold value, where it needs one) is not marked. The do-nothing baseline (``unlearner=none``)
    is a reference, never a contender: it costs nothing and is closest to M by definition."""
    out: dict[str, dict[int, str]] = defaultdict(dict)
    golds = {row.setting: row for row in summary.rows if row.gold}
    for col in summary.columns:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(summary.rows):
            if not row.gold and not row.baseline and row.mean(col) is not None:
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
        lines += [*_md_table(summary, marked, cols, warnings=cols is main), ""]
    n_runs = len({id(run) for row in summary.rows if not row.gold for run in row.runs})
    lines.append(f"{n_runs} runs. Cells: mean ± half-width of the {LEVEL:.0%} Student-t interval of the mean over "
                 "n seeds (t · s / √n); with n = 1, the single value and no interval. **Bold**: best in its "
                 "setting, its interval clear of the runner-up's; †: best or tied with it, intervals overlapping. "
                 "Best is closest to gold for accuracies and MIA, lowest for gaps, costs and distances to gold, "
                 "highest for speed-ups and agreement (docs/tracking.md, \"Sweep summaries\")."
                 + " `none` (no unlearning: M itself) is the reference, never marked." * any(r.baseline
                                                                                      for r in summary.rows)
                 + " warnings: the kinds of finding in the runs' results.json and how many of the row's runs carry "
                 "each (docs/metrics.md §9); the gold row shows the ones about the setting.")
    ns = sorted({row.n for row in summary.rows if row.n > 1})
    if ns:
        lines[-1] += " t = " + ", ".join(f"{_t(n):.2f} for n = {n}" for n in ns) + "."
    if summary.objective:
        lines.append(f"Rows sorted by the search objective `{summary.objective}`, best first.")
    lines += [f"- {note}" for note in summary.notes]
    lines += ["", *(f"![{path.stem}]({path.name})" for path in summary.figures)] * bool(summary.figures)
    return "\n".join(lines) + "\n"


def _md_table(summary: Summary, marked: dict[str, dict[int, str]], columns: list[str],
              warnings: bool = False) -> list[str]:
    """One Markdown table of ``columns``; ``warnings`` adds the rows' warnings as the last column."""
    labels = _shown_labels(summary)
    tuning = ["tuning"] * any(r.tuning for r in summary.rows)
    head = [*labels, *tuning, "n", *columns, *["warnings"] * warnings]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in columns or h == "n" else "---"
                                                          for h in head) + "|"]
    for i, row in enumerate(summary.rows):
        cells = [row.labels[k] for k in labels] + [row.tuning] * bool(tuning) + [str(row.n)]
        for col in columns:
            text, mark = _fmt(row.mean(col), row.half(col)), marked.get(col, {}).get(i)
            cells.append(f"**{text}**" if mark == "best" else f"{text} †" if mark == "tie" else text)
        cells += [row.warning_text()] * warnings
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _score(col: str, gold: float | None):
    """How a column ranks rows (lower score is better), or None for a column with no rule."""
    if any(part in col for part in HIGHER):
        return lambda v: -v
    if any(part in col for part in LOWER):
        return lambda v: v
    if gold is not None and (col.endswith("_acc") or col.startswith("mia_")):
        return lambda v: abs(v - gold)
    return None


def _shown_labels(summary: Summary) -> list[str]:
    """Dataset and model columns only when they vary, budget when a run has one; forget and unlearner always."""
    return [k for k in LABELS if k in ("forget", "unlearner") or len({r.labels[k] for r in summary.rows}) > 1
            or (k == "budget" and any(r.labels[k] for r in summary.rows))]


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
    is best or tied, its warnings (``Row.warning_text``), and its runs' seeds and directories (``;`` between runs).
    Seeds are the keys that vary across the summary's runs (``seed`` when none does)."""
    runs = [run for row in summary.rows for run in row.runs]
    varying = sorted(k for k in {k for r in runs for k in r.seeds} if len({repr(r.seeds.get(k)) for r in runs}) > 1)
    stats = ("mean", "std", "ci95")
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*LABELS, "tuning", "n", *(f"{c}_{s}" for c in summary.columns for s in stats), "best", "tied",
                    "warnings", "seeds", "runs"])
        for i, row in enumerate(summary.rows):
            values = [x for c in summary.columns for x in (row.mean(c), row.std(c), row.half(c))]
            flags = [";".join(c for c in summary.columns if marked.get(c, {}).get(i) == m) for m in ("best", "tie")]
            seeds = ";".join(",".join(f"{k}={r.seeds[k]}" for k in varying or ["seed"] if k in r.seeds)
                             for r in row.runs)
            w.writerow([*(row.labels[k] for k in LABELS), row.tuning, row.n, *("" if x is None else x for x in values),
                        *flags, row.warning_text(), seeds, ";".join(_shown_path(r.path) for r in row.runs)])

