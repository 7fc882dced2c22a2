"""The sweep report's KLoM columns and per-example figure (docs/metrics.md §14): the tail column beside the mean,
ranked lower-is-better, and a histogram per method with the gold-vs-gold floor from per_example_klom.csv."""

from __future__ import annotations

import csv

from mu_lightning.tracking import report
from mu_lightning.tracking.report.klom_plot import NAME, _values, figures
from tests.test_report import fake_run


def with_examples(run, values: list[float], floor: float) -> None:
    with (run / "per_example_klom.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "split", "klom", "klom_original", "klom_gold", "label"])
        for i, v in enumerate(values):
            w.writerow([i, "forget", v, v + 1.0, floor, 0])
        w.writerow([99, "retain", 50.0, 50.0, 50.0, 0])  # not D_f: left out of the figure
        w.writerow([98, "forget", "", "", "", 0])  # NaN in the run's file: left out


def test_tail_column_beside_the_mean_ranked_and_the_figure(tmp_path):
    runs = []
    for name, level in (("finetune", 1.0), ("gradient_ascent", 3.0)):
        for seed in (0, 1):
            run = fake_run(tmp_path / f"{name}-{seed}", name, seed,
                           {"forget_acc": 0.9, "klom_forget": level + seed / 10, "klom_forget_p95": 2 * level},
                           {"forget_acc": 0.9, "klom_forget": 0.5, "klom_forget_p95": 0.9})
            with_examples(run, [level, level + 0.5, 2 * level], floor=0.5)
            runs.append(run)
    summary = report.summarise([tmp_path], tmp_path / "out")
    main = summary.columns[: summary.columns.index("klom_forget_p95") + 1]
    assert main[-2:] == ["klom_forget", "klom_forget_p95"]  # the tail right after the mean
    marked = report.marks(summary)
    best = [summary.rows[i].labels["unlearner"] for i in marked["klom_forget"]]
    assert best == ["finetune"]  # lower is better
    row = next(r for r in summary.rows if r.labels["unlearner"] == "finetune")
    assert sorted(_values(row)) == [1.0, 1.0, 1.5, 1.5, 2.0, 2.0] and _values(row, "klom_gold") == [0.5] * 6
    assert figures(summary) and (tmp_path / "out" / NAME).exists()
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "klom_forget_p95" in md


def test_no_figure_without_per_example_files(tmp_path):
    fake_run(tmp_path / "a", "finetune", 0, {"forget_acc": 0.9}, {"forget_acc": 0.9})
    summary = report.summarise([tmp_path], tmp_path / "out")
    assert figures(summary) == [] and not (tmp_path / "out" / NAME).exists()
