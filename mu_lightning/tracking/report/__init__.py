"""Sweep reports over any set of run directories: ``summarise`` writes ``summary.csv``, ``summary.md`` and the
figures. ``runs`` reads and groups the runs, ``tables`` ranks and writes the tables, ``plots`` draws the figures
(matplotlib, imported only when ``summarise`` runs)."""

from __future__ import annotations

from pathlib import Path

from mu_lightning.tracking.report.runs import (
    LEVEL,
    TRAJECTORY,
    Row,
    Run,
    Summary,
    aggregate,
    catalogue,
    find_runs,
    half_width,
    read_trajectory,
)
from mu_lightning.tracking.report.tables import markdown, marks, write_csv

__all__ = ["LEVEL", "TRAJECTORY", "Row", "Run", "Summary", "aggregate", "catalogue", "find_runs", "half_width",
           "markdown", "marks", "read_trajectory", "summarise", "write_csv"]


def summarise(paths: list[str | Path], out: str | Path) -> Summary:
    """Find runs under ``paths``, write summary.csv, summary.md and the figures into ``out``; the returned summary
    lists them in ``files`` (``figures``: the PNGs alone)."""
    from mu_lightning.tracking.report.plots import write_all

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = aggregate(*find_runs(paths))
    marked = marks(summary)
    write_csv(summary, marked, out / "summary.csv")
    figures, skipped = write_all(summary, out)
    summary.notes.extend(skipped)
    summary.files = [out / "summary.csv", out / "summary.md", *figures]
    (out / "summary.md").write_text(markdown(summary, marked))
    return summary
