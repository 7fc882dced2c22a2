"""Paper-ready PNG figures of a report Summary (matplotlib's Agg backend: no display needed).

Every figure has one row of panels per forget setting (dataset / model / forget request), each panel titled with its
setting and n (runs per method). Colours (``colours``) are colour-blind-safe (Okabe & Ito's set, then Paul Tol's
muted colours), given in the order of the unlearner catalogue (``runs.catalogue()``, the files of
``conf/unlearner/``) to the labels of one report, so each has its own, the same in all its figures; past the
palette's 14, markers and line styles tell them apart. Gold, the retrained reference, is black and drawn once per
panel, because unlearning is judged by closeness to retraining; ``none`` (no unlearning: M itself) is a grey dotted
reference, never a bar or a point of its own on a cost axis (it costs nothing).
Every interval is the tables' 95 % Student-t interval of the mean, cut at the bounds of what it measures
(accuracies in [0, 1], gaps ≥ 0) or, on a log axis, at the axis (an arrow says it goes on). No interval with one run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from mu_lightning.tracking.report.runs import (  # noqa: E402
    BASELINE,
    LEVEL,
    TRAJECTORY,
    Row,
    Summary,
    catalogue,
    half_width,
    read_trajectory,
)

GOLD = "#000000"
REFERENCE = "0.45"  # none (no unlearning): grey, dotted
REFERENCE_LABEL = "none (no unlearning: M itself)"
# Okabe & Ito (2008) without black (gold's) and with yellow last (faint on white), then Paul Tol's muted colours
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#882255", "#332288", "#117733",
           "#999933", "#aa4499", "#44aa99", "#ddcc77", "#f0e442")
MARKERS = ("o", "s", "^", "D", "v", "P")  # for labels that share a colour (more labels than PALETTE)
LINES = ("-", "--", "-.", (0, (1, 1)))
SPEED = ("flop_speedup", "speedup", "train_seconds")  # the order reports show cost in
NAMES = {"forget_acc": "forget acc", "retain_acc": "retain acc", "test_acc": "test acc", "avg_gap": "Avg. Gap",
         "mia_loss_auc": "loss-MIA AUC", "flop_speedup": "FLOP speed-up (×)", "speedup": "speed-up (×)",
         "train_seconds": "seconds"}
# a language model's trajectory (callbacks/forget_retain.py ``qa_measure``): the same keys, the LM metrics' definitions
LM_NAMES = {"forget_acc": "forget recall\n(exact match of greedy answers)",
            "retain_acc": "retain recall\n(exact match of greedy answers)",
            "mia_loss_auc": "loss-MIA AUC\n(D_f vs never-seen people)"}
# a method whose runs carry a warning about it (``Row.warned``: no effect, damaged, ...): hollow or hatched, and "!"
WARNED = "hollow / hatched, !: a warning on the method\n(summary.md, warnings column)"
WARNED_TEXT = {"xytext": (5, 2), "textcoords": "offset points", "fontweight": "bold", "fontsize": 11,
               "color": "#c00000"}


def colours(labels: Iterable[str]) -> dict[str, str]:
    """A colour per label, in catalogue order (each method's hyperparameter variants, ``finetune[lr=0.1]``, right
    after it; labels outside the catalogue last, sorted): the i-th takes PALETTE's i-th, so every label of a report
    has its own colour while PALETTE lasts and the first methods get the colour-blind-safe ones; past that ``style``
    varies the marker and the line. ``write_all`` calls it once per report: a method keeps its colour in every figure
    of it. ``none`` is the grey reference."""
    methods = list(catalogue())

    def rank(label: str) -> tuple:
        base = label.split("[", 1)[0]
        return methods.index(base) if base in methods else len(methods), label != base, label

    ordered = sorted((label for label in dict.fromkeys(labels) if label.split("[", 1)[0] != BASELINE), key=rank)
    return {**{label: REFERENCE for label in labels if label.split("[", 1)[0] == BASELINE},
            **{label: PALETTE[i % len(PALETTE)] for i, label in enumerate(ordered)}}


def style(colour: dict[str, str], label: str) -> tuple[str, str | tuple]:
    """The marker and line style of ``label``: the first of each while its colour is its own; the k-th label of one
    colour (``colours`` ran out of them) the k-th."""
    k = [other for other in colour if colour[other] == colour[label]].index(label)
    return MARKERS[k % len(MARKERS)], LINES[k % len(LINES)]


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
    """Forget accuracy against retain and test accuracy: one row per setting; gold = star and dashed lines, ``none``
    = dotted grey lines through its point."""
    xs = [c for c in ("retain_acc", "test_acc") if c in summary.columns]
    if "forget_acc" not in summary.columns or not xs:
        return "no forget_acc with retain_acc or test_acc in the results"
    settings = _settings(summary)
    fig, axes = _grid(len(settings), len(xs), (4.2, 3.6))
    for panels, (setting, gold, rows) in zip(axes, settings, strict=True):
        for ax, x in zip(panels, xs, strict=True):
            for ref, colour_, ls, marker, label in ((gold, GOLD, "--", "*", "gold (retrained)"),
                                                    (_baseline(rows), REFERENCE, ":", "X", REFERENCE_LABEL)):
                if ref is not None and ref.mean(x) is not None and ref.mean("forget_acc") is not None:
                    ax.axhline(ref.mean("forget_acc"), color=colour_, ls=ls, lw=0.9)
                    ax.axvline(ref.mean(x), color=colour_, ls=ls, lw=0.9)
                    _point(ax, ref, x, colour_, marker, label)
            for row in _contenders(rows):
                if row.mean(x) is not None and row.mean("forget_acc") is not None:
                    name = row.labels["unlearner"]
                    _point(ax, row, x, colour[name], style(colour, name)[0], name, row.warned)
            ax.set(xlabel=NAMES[x], ylabel=NAMES["forget_acc"], title=_title(setting, rows))
            ax.grid(alpha=0.3)
    _legend(fig, any(r.warned for r in summary.rows))
    fig.suptitle(f"forget vs retain and test accuracy: mean and {_ci()} over seeds")
    return fig


def gap_bars(summary: Summary, colour: dict[str, str]):
    """Avg. Gap to gold per method (or, for a search, its objective, best first): one panel per setting, bars from
    0 on a linear axis; ``none``'s value a dotted grey line."""
    col = summary.objective or "avg_gap"
    missing = {s: [r.labels["unlearner"] for r in _contenders(rows) if r.mean(col) is None]
               for s, _, rows in _settings(summary)}
    settings = [(s, g, [r for r in rows if r.mean(col) is not None]) for s, g, rows in _settings(summary)]
    settings = [s for s in settings if _contenders(s[2])]
    if not settings:
        return f"no {col} in the results"
    fig, axes = _grid(len(settings), 1, (6.0, 0.9 + 0.45 * max(len(s[2]) for s in settings)))
    for (ax,), (setting, _, rows) in zip(axes, settings, strict=True):
        shown = _contenders(rows)
        labels = [r.labels["unlearner"] for r in shown]
        bars = ax.barh(labels, [r.mean(col) for r in shown], color=[colour[x] for x in labels])
        for y, row in enumerate(shown):  # an interval only where there is one (n > 1)
            if (span := _extent(row, col, 0.0 if "gap" in col else -math.inf, math.inf)) is not None:
                ax.errorbar(row.mean(col), y, xerr=[[span[0]], [span[1]]], color="black", capsize=3)
        for bar, row in zip(bars, shown, strict=True):
            if row.warned:
                bar.set(hatch="//", edgecolor="white")
                ax.annotate("!", (bar.get_width(), bar.get_y() + bar.get_height() / 2), **WARNED_TEXT)
        if (ref := _baseline(rows)) is not None:
            ax.axvline(ref.mean(col), color=REFERENCE, ls=":", lw=1.5, label=REFERENCE_LABEL)
        ax.invert_yaxis()  # first row on top
        none = f"\nnot drawn (no {col} in the results): {', '.join(missing[setting])}" if missing[setting] else ""
        ax.set(xlabel=NAMES.get(col, col) + " (lower is closer to gold)" * ("gap" in col) + none,
               title=_title(setting, rows))
        ax.grid(axis="x", alpha=0.3)
    what = f"search objective {col}" if summary.objective else "Avg. Gap to gold"
    fig.suptitle(f"{what}: mean and {_ci()} over seeds")
    handles = {h.get_label(): h for ax in fig.axes for h in ax.get_lines() if h.get_label() == REFERENCE_LABEL}
    if any(r.warned for _, _, rows in settings for r in rows):
        handles[WARNED] = Patch(facecolor="0.6", edgecolor="white", hatch="//")
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize=8, ncols=len(handles))
    return fig


def times(summary: Summary, colour: dict[str, str]):
    """FLOP speed-up, wall-clock speed-up over retraining and seconds: per method a point at the mean with the
    tables' t-interval, on a log axis; gold is the black line (1× for the speed-ups, its retraining time for the
    seconds, its interval shaded). ``none`` costs nothing and is not drawn."""
    cols = [c for c in SPEED if c in summary.columns]
    if not cols:
        return "no train_seconds or speed-up in the results"
    settings = _settings(summary)
    height = 1.3 + 0.32 * max(len(_contenders(rows)) for *_, rows in settings)
    fig, axes = _grid(len(settings), len(cols), (3.6, height))
    cut = False
    for panels, (setting, gold, rows) in zip(axes, settings, strict=True):
        shown = _contenders(rows)
        for ax, col in zip(panels, cols, strict=True):
            reference = 1.0 if col.endswith("speedup") else gold.mean(col) if gold is not None else None
            cut |= _cost_panel(ax, col, shown, colour, reference, gold if col == "train_seconds" else None)
            ax.set(xscale="log", xlabel=NAMES[col], title=_title(setting, rows))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10, not 10^-1, 10^0, 10^1
            ax.grid(axis="x", which="both", alpha=0.3)
            if ax is not panels[0]:
                ax.tick_params(axis="y", labelleft=False)
    handles = {"gold: 1× (as fast as retraining) and its retraining seconds, interval shaded":
               Line2D([], [], color=GOLD, ls="--")}
    if cut:
        handles["interval runs on past the axis (to 0 or beyond)"] = Line2D([], [], color="0.3", marker="<", ls="")
    if any(r.warned for *_, rows in settings for r in rows):
        handles[WARNED.replace(" / hatched", "").replace("\n", " ")] = Line2D([], [], marker="o", ls="", color="0.4",
                                                                              mfc="white")
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize=8, ncols=len(handles))
    left_out = sorted({r.labels["unlearner"] for *_, rows in settings for r in rows if r.baseline})
    note = f"; {', '.join(left_out)} (no unlearning) costs nothing, not drawn" if left_out else ""
    fig.suptitle(f"cost: mean and {_ci()} over seeds{note}")
    return fig


def _cost_panel(ax, col: str, rows: list[Row], colour: dict[str, str], reference: float | None,
                gold: Row | None) -> bool:
    """One cost panel: a row per method (first on top), log x axis from a quarter of the smallest mean to four times
    the largest; an interval beyond that is cut at the edge with an arrow. Returns whether one was cut."""
    names = [r.labels["unlearner"] for r in rows]
    means = [r.mean(col) for r in rows]
    values = [m for m in [*means, reference] if m is not None and m > 0]
    if not values:
        ax.set_yticks(range(len(names)), names)
        return False
    low, high, cut = min(values) / 4, max(values) * 4, False
    if reference is not None and reference > 0:
        ax.axvline(reference, color=GOLD, ls="--", lw=1)
        if gold is not None and gold.half(col):
            ax.axvspan(max(reference - gold.half(col), low), reference + gold.half(col), color="0.85", lw=0)
    for y, (row, name, mean) in enumerate(zip(rows, names, means, strict=True)):
        if mean is None or mean <= 0:
            ax.annotate("≤ 0", (low, y), xytext=(3, -3), textcoords="offset points", fontsize=7)
            continue
        half = row.half(col)
        left, right = (mean, mean) if half is None else (max(mean - half, low), min(mean + half, high))
        marker = style(colour, name)[0]
        ax.errorbar(mean, y, xerr=[[mean - left], [right - mean]] if half else None, fmt=marker, ms=7, capsize=3,
                    color=colour[name], mfc="white" if row.warned else colour[name], label=name)
        for edge, end, arrow in ((low, mean - (half or 0), "<"), (high, mean + (half or 0), ">")):
            if (end <= edge) if arrow == "<" else (end >= edge):
                ax.plot(edge, y, marker=arrow, color=colour[name], ms=6, clip_on=False)
                cut = True
    ax.set(xlim=(low, high), ylim=(len(names) - 0.5, -0.5))
    ax.set_yticks(range(len(names)), names)
    return cut


def trajectory(summary: Summary, colour: dict[str, str]):
    """Forget, retain and test accuracy and the loss-MIA AUC over unlearning steps (callbacks/forget_retain.py):
    the mean over seeds as a line with a marker at each measured point, the tables' t-interval as a band, gold's
    final value as a dashed black line, ``none``'s (M's) as a dotted grey one."""
    curves = {id(r): [t for t in map(read_trajectory, (run.path for run in r.runs)) if t]
              for r in summary.rows if not r.gold}
    metrics = [m for m in TRAJECTORY if any(m in t for ts in curves.values() for t in ts)]
    if not metrics:
        return ("no trajectory in the runs (trajectory/unlearn.csv, or csv/unlearn/metrics.csv of older runs: "
                "needs callbacks.forget_retain and a logger)")
    settings = [(s, g, [r for r in rows if curves[id(r)] or r.baseline]) for s, g, rows in _settings(summary)]
    settings = [s for s in settings if _contenders(s[2])]
    fig, axes = _grid(len(settings), len(metrics), (3.6, 3.2))
    for panels, (setting, gold, rows) in zip(axes, settings, strict=True):
        names = LM_NAMES if any(r.mean("forget_truth_ratio") is not None for r in rows) else NAMES  # metrics/lm.py
        for ax, metric in zip(panels, metrics, strict=True):
            for ref, colour_, ls, label in ((gold, GOLD, "--", "gold (retrained)"),
                                            (_baseline(rows), REFERENCE, ":", REFERENCE_LABEL)):
                if ref is not None and ref.mean(metric) is not None:
                    ax.axhline(ref.mean(metric), color=colour_, ls=ls, lw=1.2, label=label)
            means = [ax.get_lines()[k].get_ydata()[0] for k in range(len(ax.get_lines()))]
            for row in _contenders(rows):
                runs = [t[metric] for t in curves[id(row)] if metric in t]
                if runs:
                    name = row.labels["unlearner"]
                    means += _curve(ax, runs, colour[name], name, *style(colour, name))
            pad = max(0.15 * (max(means) - min(means)), 0.01)  # the means decide the range; a band may run past it
            ax.set(xlabel="unlearning step", ylabel=names[metric], title=_title(setting, rows),
                   ylim=(max(min(means) - pad, -0.02), min(max(means) + pad, 1.02)))  # 0 and 1 off the frame
            ax.grid(alpha=0.3)
    _legend(fig)
    fig.suptitle(f"trajectory during unlearning: mean over seeds (band: {_ci()}, cut at the axes); gold dashed")
    return fig


def _curve(ax, runs: list[dict[int, float]], colour: str, label: str, marker: str, ls) -> list[float]:
    """The mean over ``runs`` at the steps they share, a marker at each (larger for a short run, whose few points
    must not read as a curve), and the t-interval of the mean as a band, cut to [0, 1]; returns the means."""
    steps = sorted(set.intersection(*(set(r) for r in runs)))
    means = [statistics.fmean(r[s] for r in runs) for s in steps]
    ax.plot(steps, means, color=colour, label=label, marker=marker, ms=3.5 if len(steps) > 6 else 6, ls=ls, lw=1.4)
    if len(runs) > 1:
        halves = [half_width([r[s] for r in runs]) for s in steps]
        ax.fill_between(steps, [max(m - h, 0.0) for m, h in zip(means, halves, strict=True)],
                        [min(m + h, 1.0) for m, h in zip(means, halves, strict=True)], color=colour, alpha=0.18, lw=0)
    return means


def _contenders(rows: list[Row]) -> list[Row]:
    """The unlearner rows but the do-nothing baseline (a reference line of its own)."""
    return [r for r in rows if not r.baseline]


def _baseline(rows: list[Row]) -> Row | None:
    return next((r for r in rows if r.baseline), None)


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
    fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=8)  # clear of the title
