"""The per-example KLoM figure of a sweep report (docs/metrics.md §11, §14): per setting, the distribution over
D_f of each method's per-example KLoM beside the gold-vs-gold floor and doing nothing, read from the runs'
``per_example_klom.csv`` (``metric=ensemble``). A mean hides the tail; this figure shows it."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

from mu_lightning.tracking.report.runs import Row, Summary

NAME = "klom_per_example.png"
FILE = "per_example_klom.csv"
# the references: (column, legend, histogram style), drawn in black so that no method's colour is taken
REFERENCES = (("klom_gold", "gold vs gold (floor)", {"histtype": "stepfilled", "color": "black", "alpha": 0.18}),
              ("klom_original", "original (doing nothing)", {"histtype": "step", "color": "black", "linestyle": ":",
                                                             "linewidth": 1.4}))


def figures(summary: Summary) -> list[tuple[str, Callable]]:
    """``plots.write_all``'s entry for the figure: none unless some run wrote per-example KLoM."""
    return [(NAME, per_example)] if any(_values(row) for row in summary.rows if not row.gold) else []


def _values(row: Row, column: str = "klom") -> list[float]:
    """``column`` of every D_f example of every run of ``row`` (NaN and missing left out)."""
    out = []
    for run in row.runs:
        path = Path(run.path) / FILE
        if not path.exists():
            continue
        with path.open() as f:
            out += [float(r[column]) for r in csv.DictReader(f) if r["split"] == "forget" and r.get(column)]
    return [v for v in out if not math.isnan(v)]


def per_example(summary: Summary, colour: dict[str, str]):
    """One panel per setting: step histograms of per-example KLoM on D_f, one per method, the floor and doing
    nothing (from the first method's runs: the same ensembles for every method of a setting) in black."""
    import matplotlib.pyplot as plt

    settings: dict[tuple, list[Row]] = {}
    for row in summary.rows:
        if not row.gold and _values(row):
            settings.setdefault(row.setting, []).append(row)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.8), squeeze=False)
    for ax, (setting, rows) in zip(axes[0], settings.items(), strict=True):
        top = max(max(_values(r)) for r in rows)
        bins = [top * i / 30 for i in range(31)] if top > 0 else 30
        for column, label, style in REFERENCES:
            ref = _values(rows[0], column)
            if ref:
                ax.hist(ref, bins=bins, label=label, **style)
        for row in rows:
            name = row.labels["unlearner"]
            ax.hist(_values(row), bins=bins, histtype="step", linewidth=1.6, color=colour.get(name), label=name)
        ax.set_title(" · ".join(str(s) for s in setting if s), fontsize=9)
        ax.set_xlabel("per-example KLoM on D_f (nats)")
        ax.set_ylabel("examples (over the runs)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
