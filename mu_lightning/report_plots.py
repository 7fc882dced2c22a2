"""PNG plots of a report Summary (matplotlib, Agg backend: no display needed).

Gold is drawn as the reference point (a black star with dashed lines) because unlearning is judged by closeness to
retraining, not by the highest or lowest accuracy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def write_all(summary, out: Path) -> list[str]:
    """Write every plot the summary's columns allow; returns notes on the ones skipped."""
    notes = []
    cols = set(summary.columns)
    for name, plot, needs, ok in (
            ("forget_vs_acc.png", _forget_vs_acc, "forget_acc with retain_acc or test_acc",
             "forget_acc" in cols and bool(cols & {"retain_acc", "test_acc"})),
            ("avg_gap.png", _avg_gap, "avg_gap", "avg_gap" in cols),
            ("time.png", _time, "train_seconds", "train_seconds" in cols)):
        if not ok:
            notes.append(f"{name} skipped: no {needs} in the results")
            continue
        fig = plot(summary)
        fig.savefig(out / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return notes


def _label(row, several: bool) -> str:
    return f"{row.labels['unlearner']} ({row.labels['forget']})" if several else row.labels["unlearner"]


def _several(summary) -> bool:
    return len({(r.labels["dataset"], r.labels["model"], r.labels["forget"]) for r in summary.rows}) > 1


def _forget_vs_acc(summary):
    xs = [c for c in ("retain_acc", "test_acc") if c in summary.columns]
    fig, axes = plt.subplots(1, len(xs), figsize=(5.5 * len(xs), 4.5), squeeze=False)
    several = _several(summary)
    for ax, x in zip(axes[0], xs, strict=True):
        for row in summary.rows:
            if row.mean(x) is None or row.mean("forget_acc") is None:
                continue
            if row.gold:
                ax.axhline(row.mean("forget_acc"), color="k", ls="--", lw=0.8)
                ax.axvline(row.mean(x), color="k", ls="--", lw=0.8)
                ax.errorbar(row.mean(x), row.mean("forget_acc"), xerr=row.std(x), yerr=row.std("forget_acc"),
                            fmt="*", ms=14, color="k", label=_label(row, several))
            else:
                ax.errorbar(row.mean(x), row.mean("forget_acc"), xerr=row.std(x), yerr=row.std("forget_acc"),
                            fmt="o", ms=7, capsize=3, label=_label(row, several))
        ax.set(xlabel=x.replace("_", " "), ylabel="forget acc", title=f"forget acc vs {x.replace('_', ' ')}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("mean ± std over seeds; gold (retrained) = star and dashed lines")
    return fig


def _avg_gap(summary):
    rows = [r for r in summary.rows if not r.gold and r.mean("avg_gap") is not None]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows) + 2), 4))
    several = _several(summary)
    ax.bar([_label(r, several) for r in rows], [r.mean("avg_gap") for r in rows],
           yerr=[r.std("avg_gap") for r in rows], capsize=4, color="tab:blue")
    ax.set(ylabel="Avg. Gap (lower is closer to gold)", title="Avg. Gap, mean ± std over seeds")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return fig


def _time(summary):
    several = _several(summary)
    rows = [r for r in summary.rows if r.mean("train_seconds") is not None]
    names = [("retrain: " + _label(r, several)) if r.gold else _label(r, several) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2 * len(rows) + 3), 4))
    axes[0].bar(names, [r.mean("train_seconds") for r in rows], yerr=[r.std("train_seconds") for r in rows],
                capsize=4,
                color=["0.4" if r.gold else "tab:orange" for r in rows])
    axes[0].set(ylabel="seconds", title="unlearning time (gray: retraining the gold model)")
    fast = [r for r in rows if r.mean("speedup") is not None]
    axes[1].bar([_label(r, several) for r in fast], [r.mean("speedup") for r in fast],
                yerr=[r.std("speedup") for r in fast], capsize=4, color="tab:green")
    axes[1].set(ylabel="× faster than retraining", title="speed-up over retraining", yscale="log")
    for ax in axes:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return fig
