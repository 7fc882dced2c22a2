"""Paper-ready PNG figures of a report Summary (matplotlib's Agg backend: no display needed).

Every figure has one row of panels per forget setting (dataset / model / forget request), each panel titled with its
setting and n (runs per method). A method has one colour in every figure (``colours``: its place in the unlearner
catalogue, ``runs.catalogue()``, the files of ``conf/unlearner/``); gold, the retrained reference, is black and
drawn once per panel, because unlearning is judged by closeness to retraining. Error bars are the tables' 95 %
Student-t intervals, cut at the bounds of what they measure (accuracies in [0, 1], gaps ≥ 0); seconds and speed-ups
are ratios on a log axis, so they show the geometric mean and the t-interval of the logs, asymmetric and always
positive. No error bar with one run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mu_lightning.tracking.report.runs import (  # noqa: E402
    LEVEL,
    TRAJECTORY,
    Row,
    Summary,
    catalogue,
    half_width,
    read_trajectory,
)

GOLD = "#000000"
SPEED = ("flop_speedup", "speedup", "train_seconds")  # the order reports show cost in
NAMES = {"forget_acc": "forget acc", "retain_acc": "retain acc", "test_acc": "test acc", "avg_gap": "Avg. Gap",
         "mia_loss_auc": "loss-MIA AUC", "flop_speedup": "FLOP speed-up (×)", "speedup": "speed-up (×)",
         "train_seconds": "seconds"}
# a method whose runs carry a warning about it (``Row.warned``: no effect, damaged, ...): hollow or hatched, and "!"
WARNED = "hollow / hatched, !: a warning on the method\n(summary.md, warnings column)"
WARNED_TEXT = {"xytext": (5, 2), "textcoords": "offset points", "fontweight": "bold", "fontsize": 11,
               "color": "#c00000"}


def colours(labels: Iterable[str]) -> dict[str, str]:
    """Each catalogue method's fixed colour, by its place in the catalogue (tab10, Dark2, then Set1: 27 distinct
    colours); a label outside the catalogue (a hyperparameter variant, your own method) gets one of tab20b, in sorted
    order."""
    palette = list(dict.fromkeys(to_hex(c) for name in ("tab10", "Dark2", "Set1") for c in plt.get_cmap(name).colors))
    extra = [to_hex(c) for c in plt.get_cmap("tab20b").colors]
    labels = set(labels)
    fixed = {m: palette[i % len(palette)] for i, m in enumerate(catalogue()) if m in labels}
    return {**fixed, **{label: extra[i % len(extra)] for i, label in enumerate(sorted(labels - set(fixed)))}}


def write_all(summary: Summary, out: Path) -> tuple[list[Path], list[str]]:
    """Write every figure the summary allows into ``out``; returns their paths and notes on the ones skipped."""
    # the quality-vs-compute figure when runs have a budget; per-example KLoM when runs wrote it (metric=ensemble)
    from mu_lightning.tracking.report import budget, klom_plot

    colour = colours(r.labels["unlearner"] for r in summary.rows if not r.gold)
    bars = "objective.png" if summary.objective else "avg_gap.png"
    figures, notes = [], []
    for name, draw in (("forget_vs_acc.png", forget_vs_acc), (bars, gap_bars), ("time.png", times),
                       ("trajectory.png", trajectory), *budget.figures(summary), *klom_plot.figures(summary)):
        fig = draw(summary, colour)
        if isinstance(fig, str):
            notes.append(f"{name} skipped: {fig}")
            continue
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        figures.append(out / name)
    return figures, notes + budget.notes(summary)


def forget_vs_acc(summary: Summary, colour: dict[str, str]):
    """Forget accuracy against retain and test accuracy: one row per setting; gold = star and dashed lines."""
    xs = [c for c in ("retain_acc", "test_acc") if c in summary.columns]
    if "forget_acc" not in summary.columns or not xs:
        return "no forget_acc with retain_acc or test_acc in the results"
    settings = _settings(summary)
    fig, axes = _grid(len(settings), len(xs), (4.2, 3.6))
    for panels, (setting, gold, rows) in zip(axes, settings, strict=True):
        for ax, x in zip(panels, xs, strict=True):
            if gold is not None and gold.mean(x) is not None and gold.mean("forget_acc") is not None:
                ax.axhline(gold.mean("forget_acc"), color=GOLD, ls="--", lw=0.8)
                ax.axvline(gold.mean(x), color=GOLD, ls="--", lw=0.8)
                _point(ax, gold, x, GOLD, "*", "gold (retrained)")
            for row in rows:
                if row.mean(x) is not None and row.mean("forget_acc") is not None:
                    _point(ax, row, x, colour[row.labels["unlearner"]], "o", row.labels["unlearner"], row.warned)
            ax.set(xlabel=NAMES[x], ylabel=NAMES["forget_acc"], title=_title(setting, rows))
            ax.grid(alpha=0.3)
    _legend(fig, any(r.warned for r in summary.rows))
    fig.suptitle(f"forget vs retain and test accuracy: mean and {_ci()} over seeds")
    return fig


def gap_bars(summary: Summary, colour: dict[str, str]):
    """Avg. Gap to gold per method (or, for a search, its objective, best first): one panel per setting."""
    col = summary.objective or "avg_gap"
    settings = [(s, g, [r for r in rows if r.mean(col) is not None]) for s, g, rows in _settings(summary)]
    settings = [s for s in settings if s[2]]
    if not settings:
        return f"no {col} in the results"
    fig, axes = _grid(len(settings), 1, (6.0, 0.9 + 0.45 * max(len(s[2]) for s in settings)))
    for (ax,), (setting, _, rows) in zip(axes, settings, strict=True):
        labels = [r.labels["unlearner"] for r in rows]
        extents = _extents([_extent(r, col, 0.0 if "gap" in col else -math.inf, math.inf) for r in rows])
        bars = ax.barh(labels, [r.mean(col) for r in rows], xerr=extents, capsize=3,
                       color=[colour[x] for x in labels])
        for bar, row in zip(bars, rows, strict=True):
            if row.warned:
                bar.set(hatch="//", edgecolor="white")
                ax.annotate("!", (bar.get_width(), bar.get_y() + bar.get_height() / 2), **WARNED_TEXT)
        ax.invert_yaxis()  # first row on top
        ax.set(xlabel=NAMES.get(col, col) + " (lower is closer to gold)" * ("gap" in col),
               title=_title(setting, rows))
        ax.grid(axis="x", alpha=0.3)
    what = f"search objective {col}" if summary.objective else "Avg. Gap to gold"
    fig.suptitle(f"{what}: mean and {_ci()} over seeds")
    if any(r.warned for _, _, rows in settings for r in rows):
        fig.legend([Patch(facecolor="0.6", edgecolor="white", hatch="//")], [WARNED], loc="outside lower center",
                   fontsize=8)
    return fig


def times(summary: Summary, colour: dict[str, str]):
    """FLOP speed-up, wall-clock speed-up over retraining (with the 1× line) and seconds, log axes; gold's
    retraining time is the grey bar of the seconds panel."""
    cols = [c for c in SPEED if c in summary.columns]
    if not cols:
        return "no train_seconds or speed-up in the results"
    settings = _settings(summary)
    fig, axes = _grid(len(settings), len(cols), (4.0, 3.6))
    for panels, (setting, gold, rows) in zip(axes, settings, strict=True):
        for ax, col in zip(panels, cols, strict=True):
            shown = [r for r in ([gold] if gold is not None and col == "train_seconds" else []) + rows
                     if r.values.get(col) and min(r.values[col]) > 0]
            left_out = [r.labels["unlearner"] for r in rows if r not in shown and r.values.get(col)]
            names = ["gold (retrain)" if r.gold else r.labels["unlearner"] for r in shown]
            spans = [_log_interval(r.values[col]) for r in shown]
            ax.bar(names, [s[0] for s in spans], yerr=_extents([s[1] for s in spans]), capsize=3,
                   color=["0.55" if r.gold else colour[r.labels["unlearner"]] for r in shown])
            if col.endswith("speedup"):
                ax.axhline(1.0, color=GOLD, ls="--", lw=1, label="1× (as fast as retraining)")
            ax.set(yscale="log", ylabel=NAMES[col], title=_title(setting, rows),
                   xlabel=f"not shown (≤ 0): {', '.join(left_out)}" if left_out else None)
            ax.tick_params(axis="x", labelrotation=30)
            ax.grid(axis="y", alpha=0.3)
    _legend(fig)
    fig.suptitle(f"cost: geometric mean and {_ci()} of the logs over seeds")
    return fig


def trajectory(summary: Summary, colour: dict[str, str]):
    """Forget, retain and test accuracy and the loss-MIA AUC over unlearning steps (callbacks/forget_retain.py):
    the mean over seeds as a line, their range as a band, gold's final value as a dashed black line."""
    curves = {id(r): [t for t in map(read_trajectory, (run.path for run in r.runs)) if t]
              for r in summary.rows if not r.gold}
    metrics = [m for m in TRAJECTORY if any(m in t for ts in curves.values() for t in ts)]
    if not metrics:
        return "no trajectory in csv/unlearn/metrics.csv (needs the csv logger and callbacks.forget_retain)"
    settings = [(s, g, [r for r in rows if curves[id(r)]]) for s, g, rows in _settings(summary)]
    settings = [s for s in settings if s[2]]
    fig, axes = _grid(len(settings), len(metrics), (3.6, 3.2))
    for panels, (setting, gold, rows) in zip(axes, settings, strict=True):
        for ax, metric in zip(panels, metrics, strict=True):
            if gold is not None and gold.mean(metric) is not None:
                ax.axhline(gold.mean(metric), color=GOLD, ls="--", lw=1, label="gold (retrained)")
            for row in rows:
                runs = [t[metric] for t in curves[id(row)] if metric in t]
                if runs:
                    _curve(ax, runs, colour[row.labels["unlearner"]], row.labels["unlearner"])
            ax.set(xlabel="unlearning step", ylabel=NAMES[metric], title=_title(setting, rows))
            ax.grid(alpha=0.3)
    _legend(fig)
    fig.suptitle("trajectory during unlearning: mean over seeds (band: their range); gold dashed")
    return fig


def _curve(ax, runs: list[dict[int, float]], colour: str, label: str) -> None:
    steps = sorted(set.intersection(*(set(r) for r in runs)))
    ax.plot(steps, [statistics.fmean(r[s] for r in runs) for s in steps], color=colour, label=label, marker=".")
    if len(runs) > 1:
        ax.fill_between(steps, [min(r[s] for r in runs) for s in steps], [max(r[s] for r in runs) for s in steps],
                        color=colour, alpha=0.2, lw=0)


def _settings(summary: Summary) -> list[tuple[tuple[str, ...], Row | None, list[Row]]]:
    """(setting, its gold row, its unlearner rows), in the summary's order."""
    out: dict[tuple, tuple] = {}
    for row in summary.rows:
        *_, rows = out.setdefault(row.setting, (row.setting, None, []))
        if row.gold:
            out[row.setting] = (row.setting, row, rows)
        else:
            rows.append(row)
    return list(out.values())


def _grid(rows: int, cols: int, size: tuple[float, float]):
    return plt.subplots(rows, cols, squeeze=False, layout="constrained",
                        figsize=(size[0] * cols + 2.2, size[1] * rows + 0.6))


def _title(setting: tuple[str, ...], rows: list[Row]) -> str:
    ns = sorted({r.n for r in rows})
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    budget = f"\nbudget {setting[-1]}" if setting[-1] else ""  # runs.LABELS: the budget last, on a line of its own
    return f"{' / '.join(setting[:-1])}{budget}\nn = {n}"


def _ci() -> str:
    return f"{LEVEL:.0%} t-interval"


def _extent(row: Row, col: str, low: float, high: float) -> tuple[float, float] | None:
    """The row's t-interval of ``col`` as (below, above) the mean, cut at [low, high]; None with one run."""
    mean, half = row.mean(col), row.half(col)
    return None if half is None else (min(half, mean - low), min(half, high - mean))


def _log_interval(values: list[float]) -> tuple[float, tuple[float, float] | None]:
    """Geometric mean of positive values and its t-interval on the log scale, as (below, above) it."""
    logs = [math.log(v) for v in values]
    centre, half = statistics.fmean(logs), half_width(logs)
    mean = math.exp(centre)
    return mean, None if half is None else (mean - math.exp(centre - half), math.exp(centre + half) - mean)


def _extents(spans: list[tuple[float, float] | None]) -> list[list[float]] | None:
    """Matplotlib's 2×N error array; rows without an interval get none; None when no row has one."""
    if all(s is None for s in spans):
        return None
    return [[s[0] if s else 0.0 for s in spans], [s[1] if s else 0.0 for s in spans]]


def _point(ax, row: Row, x: str, colour: str, marker: str, label: str, warned: bool = False) -> None:
    """One row's mean with its intervals; ``warned``: a hollow marker and a "!" beside it (``WARNED``)."""
    xerr, yerr = _extent(row, x, 0.0, 1.0), _extent(row, "forget_acc", 0.0, 1.0)
    ax.errorbar(row.mean(x), row.mean("forget_acc"), xerr=None if xerr is None else [[xerr[0]], [xerr[1]]],
                yerr=None if yerr is None else [[yerr[0]], [yerr[1]]], fmt=marker, ms=13 if marker == "*" else 7,
                capsize=3, color=colour, label=label, mfc="white" if warned else colour)
    if warned:
        ax.annotate("!", (row.mean(x), row.mean("forget_acc")), **WARNED_TEXT)


def _legend(fig, warned: bool = False) -> None:
    """One legend for the figure, each label once, outside the panels; ``warned`` adds what a hollow marker means."""
    handles = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if warned:
        handles[WARNED] = Line2D([], [], marker="o", ls="", color="0.4", mfc="white")
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=8)

