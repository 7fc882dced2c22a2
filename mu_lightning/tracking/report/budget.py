"""Methods compared at a matched compute budget (``budget.flops``, docs/metrics.md §5): the quality-vs-compute figure
and the notes that say what the budget did to each row.

A run's budget is part of its row's setting (``runs.budget_label``), so the tables mark the best method within one
budget and never compare rows at different budgets. The figure puts the budgets of a forget setting back on one
panel: Avg. Gap to gold against the fraction of the gold model's training FLOPs each row actually spent (unlearning
FLOPs / gold FLOPs, from results.json), one line per method through its budgets in the colours of every other figure;
a dotted vertical line at each budget; gold's noise floor (the gold row's Avg. Gap, which only ``metric=seeds``
measures: other gold seeds against the reference gold) as a dashed line with its interval shaded, or none and a note
saying so. A point's marker says what the budget did: stopped the method (filled), left it to finish (hollow), or was
overrun by one-shot work, which runs whole (a cross); a run without a budget of the same setting is a square. A point
the budget did not stop is labelled with its budgets, since it lies on none of their lines (and the runs of a
method that finished within several budgets are the same run, drawn once).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mu_lightning.tracking.report.runs import LEVEL, Row, Run, Summary

NAME = "quality_vs_compute.png"
# what the budget did to a row -> (marker, filled, legend text)
STATUS = {"stopped": ("o", True, "stopped by its budget"), "within": ("o", False, "finished within its budget"),
          "over": ("X", True, "over budget (one-shot work runs whole)"), "unlimited": ("s", True, "no budget")}
NOISE_FLOOR = "the gold row's Avg. Gap, which only metric=seeds measures"


@dataclass
class Point:
    """One row on the figure: its mean Avg. Gap at the mean fraction of gold's FLOPs its runs spent."""

    row: Row
    spent: float
    status: str
    stops: list[int | None]
    planned: int | None


def figures(summary: Summary) -> list[tuple[str, Callable]]:
    """``plots.write_all``'s entry for the figure: none unless some run had a budget."""
    return [(NAME, quality_vs_compute)] if _budgeted(summary) else []


def notes(summary: Summary) -> list[str]:
    """For summary.md: how rows at budgets are ranked, what the budget did to each row it stopped or that overran it,
    and whether gold's noise floor is drawn."""
    if not _budgeted(summary):
        return []
    out = ["Budgets (budget.flops, a fraction of the gold model's training FLOPs) are part of a row's setting: best "
           "is marked within one budget, never across budgets."]
    for setting, gold, points in _panels(summary):
        for p in points:
            where = f"{p.row.labels['unlearner']} at {p.row.labels['budget']}"
            if p.status == "over":
                out.append(f"{where}: over budget, spent {p.spent:.3g}× gold FLOPs: its one-shot work runs whole")
            elif p.status == "stopped":
                steps = "/".join(sorted({str(s) for s in p.stops if s is not None}))
                out.append(f"{where}: stopped by the budget after {steps} of {p.planned} steps (spent "
                           f"{p.spent:.3g}× gold FLOPs)")
        if gold is None:
            out.append(f"{NAME}: no line for gold's noise floor ({NOISE_FLOOR})")
        if left_out := _left_out(summary, setting):
            out.append(f"{NAME} leaves out {', '.join(left_out)}: no Avg. Gap in their results (see their warnings)")
    return list(dict.fromkeys(out))


def quality_vs_compute(summary: Summary, colour: dict[str, str]):
    """One panel per forget setting: Avg. Gap against the FLOP fraction spent, one line per method over budgets."""
    import matplotlib.pyplot as plt

    panels = [(s, g, [p for p in points if p.row.mean("avg_gap") is not None]) for s, g, points in _panels(summary)]
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        return "no avg_gap with FLOP counts in the runs that had a budget"
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, layout="constrained",
                             figsize=(8.6, 4.4 * len(panels) + 0.6))
    for (ax,), (setting, gold, points) in zip(axes, panels, strict=True):
        _panel(ax, setting, gold, points, colour)
        if left_out := _left_out(summary, setting):
            ax.set_xlabel(f"{ax.get_xlabel()}\nnot drawn (no Avg. Gap): {', '.join(left_out)}")
    handles: dict[str, Any] = {}
    for ax in fig.axes:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=8)  # clear of the title
    band = "dashed: gold's noise floor" if all(g is not None for _, g, _ in panels) else \
        "no line for gold's noise floor (it needs metric=seeds)"
    fig.suptitle(f"quality vs compute: Avg. Gap, mean and {LEVEL:.0%} t-interval over seeds\n{band}", fontsize=10)
    return fig


def _panel(ax, setting: tuple[str, ...], gold: Row | None, points: list[Point], colour: dict[str, str]) -> None:
    spent = [p.spent for p in points if p.spent > 0]
    log = bool(spent) and max(spent) >= 10 * min(spent)  # fractions spanning a decade or more
    shown = [p for p in points if p.spent > 0 or not log]
    budgets = _guides(ax, points, gold)
    for method in dict.fromkeys(p.row.labels["unlearner"] for p in shown):
        _method(ax, sorted((p for p in shown if p.row.labels["unlearner"] == method), key=lambda p: p.spent),
                colour[method], method, max(p.spent for p in shown))
    for status in dict.fromkeys(p.status for p in shown):  # what the markers mean, in black
        marker, filled, text = STATUS[status]
        ax.plot([], [], ls="none", marker=marker, color="k", mfc="k" if filled else "white", ms=7, label=text)
    hidden = sorted({p.row.labels["unlearner"] for p in points if p not in shown})
    xlabel = "FLOPs spent unlearning / gold model's training FLOPs" + (f"\nnot shown (0 FLOPs): {', '.join(hidden)}"
                                                                        if hidden else "")
    ax.set(xscale="log" if log else "linear", xlabel=xlabel, ylabel="Avg. Gap to gold (lower is better)",
           title=f"{' / '.join(setting)}\nn = {'–'.join(sorted({str(p.row.n) for p in points}, key=int))}")
    _y_range(ax, shown, gold, colour)
    ax.margins(x=0.1)  # room for the labels of the first and last points
    ax.grid(alpha=0.3)
    if log:
        _log_ticks(ax, spent, budgets)


def _guides(ax, points: list[Point], gold: Row | None) -> list[float]:
    """A dotted line at each budget of the panel's runs (returned) and gold's noise floor, dashed, its interval
    shaded."""
    budgets = sorted({float(r.flat["budget.flops"]) for p in points for r in p.row.runs
                      if r.flat.get("budget.flops") is not None})
    for fraction in budgets:
        ax.axvline(fraction, color="0.55", ls=":", lw=1, label="budget (budget.flops)")
    if gold is not None:
        mean, half = gold.mean("avg_gap"), gold.half("avg_gap") or 0.0
        ax.axhspan(max(mean - half, 0.0), mean + half, color="0.8", alpha=0.6, lw=0)
        ax.axhline(mean, color="#000000", lw=1, ls="--",
                   label=f"gold noise floor (mean, {LEVEL:.0%} interval)" if half else "gold noise floor")
    return budgets


def _y_range(ax, shown: list[Point], gold: Row | None, colour: dict[str, str]) -> None:
    """From 0 to a quarter above the highest mean (or gold's interval): one wild seed's interval does not flatten
    every other point. An interval that goes on above is cut there and its top written at the edge."""
    means = [p.row.mean("avg_gap") for p in shown]
    top = 1.25 * max([*means, gold.mean("avg_gap") + (gold.half("avg_gap") or 0.0)] if gold else means)
    ax.set_ylim(0.0, top)
    for p, mean in zip(shown, means, strict=True):
        if mean + (p.row.half("avg_gap") or 0.0) > top:
            ax.annotate(f"↑ {mean + p.row.half('avg_gap'):.3g}", (p.spent, top), xytext=(4, -11), fontsize=7,
                        textcoords="offset points", color=colour[p.row.labels["unlearner"]])


def _log_ticks(ax, spent: list[float], budgets: list[float]) -> None:
    """Plain-number ticks on a log axis: the budgets, and 1, 2 and 5 times the powers of ten within the range of
    what was spent; the minor ticks unlabelled (their default labels run into each other)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    low, high = min(spent + budgets), max(spent + budgets)
    powers = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    steps = {round(m * 10.0**k, 12) for k in powers for m in (1, 2, 5)}
    ax.set_xticks(sorted({t for t in steps if low <= t <= high} | set(budgets)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _method(ax, points: list[Point], colour: str, label: str, right: float) -> None:
    """One method's line through its budgets, each point with its interval and its status marker; a label on a
    point the budget did not stop, reaching right from it (left from the right-most point, ``right``)."""
    ax.plot([p.spent for p in points], [p.row.mean("avg_gap") for p in points], color=colour, lw=1.4, label=label)
    for p in points:
        mean, half = p.row.mean("avg_gap"), p.row.half("avg_gap")
        marker, filled, _ = STATUS[p.status]
        ax.errorbar(p.spent, mean, yerr=None if half is None else [[min(half, mean)], [half]], color=colour,
                    marker=marker, mfc=colour if filled else "white", ms=8, mew=1.6, capsize=3, ls="none", zorder=3)
    for (x, y), budgets in _unstopped(points).items():
        ax.annotate(f"budget {', '.join(budgets)}", (x, y), xytext=(-6, -15) if x < right else (6, -15),
                    textcoords="offset points", fontsize=7, color=colour, ha="left" if x < right else "right")


def _unstopped(points: list[Point]) -> dict[tuple[float, float], list[str]]:
    """The budgets of the points the budget did not stop, by where they are drawn (coinciding points together)."""
    out: dict[tuple[float, float], list[str]] = {}
    for p in points:
        if p.status in ("within", "over"):
            out.setdefault((p.spent, p.row.mean("avg_gap")), []).append(p.row.labels["budget"].split("×")[0])
    return out


def _left_out(summary: Summary, setting: tuple[str, ...]) -> list[str]:
    """The budgeted rows of ``setting`` (without its budget) that have no Avg. Gap to draw."""
    return [f"{r.labels['unlearner']} at {r.labels['budget']}" for r in summary.rows if not r.gold
            and r.labels["budget"] and r.setting[:-1] == setting and r.mean("avg_gap") is None]


def _budgeted(summary: Summary) -> bool:
    return any(r.labels.get("budget") for r in summary.rows)


def _panels(summary: Summary) -> list[tuple[tuple[str, ...], Row | None, list[Point]]]:
    """Per forget setting with a budgeted row: (setting without the budget, the gold row whose Avg. Gap is the noise
    floor or None, every unlearner row of it with FLOP counts, budgeted or not)."""
    out: dict[tuple, tuple] = {}
    for row in summary.rows:
        setting, gap = row.setting[:-1], row.mean("avg_gap")
        _, gold, points = out.setdefault(setting, (setting, None, []))
        if row.gold and gold is None and gap is not None:
            out[setting] = (setting, row, points)
        elif not row.gold and (point := _point(row)) is not None:
            points.append(point)
    return [v for v in out.values() if any(p.status != "unlimited" for p in v[2])]


def _point(row: Row) -> Point | None:
    """The row's mean FLOP fraction and what its budget did, from its runs' results.json; None without FLOPs."""
    facts = [_facts(run) for run in row.runs]
    spent = [f["spent"] for f in facts if f["spent"] is not None]
    if not spent:
        return None
    budgets = [f.get("budget") or {} for f in facts]
    status = ("unlimited" if not row.labels.get("budget") else "over" if any(b.get("over_budget") for b in budgets)
              else "stopped" if any(b.get("stopped_at_step") is not None for b in budgets) else "within")
    return Point(row, statistics.fmean(spent), status, [b.get("stopped_at_step") for b in budgets],
                 max((b.get("planned_steps") or 0 for b in budgets), default=None))


def _facts(run: Run) -> dict[str, Any]:
    """The run's unlearning FLOPs as a fraction of its gold model's (None where either is unknown) and its budget."""
    stages = json.loads((run.path / "results.json").read_text()).get("stages", {})
    unlearn, gold = stages.get("unlearn", {}), stages.get("gold", {})
    flops, reference = unlearn.get("flops"), gold.get("flops")
    spent = flops / reference if isinstance(flops, int | float) and isinstance(reference, int | float) and reference \
        else None
    return {"spent": spent, "budget": unlearn.get("budget")}
