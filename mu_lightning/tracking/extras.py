"""End-of-run extras on the loggers: W&B tables, histograms, scatter plots and model artifacts, TensorBoard
histograms and figures, and a sweep's summary as a W&B run. Optional: a failure never fails a completed run."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger

from mu_lightning.metrics.names import CLEAN
from mu_lightning.metrics.names import MODELS as METRIC_MODELS
from mu_lightning.tracking.loggers import bounded
from mu_lightning.tracking.naming import sweep_group

log = logging.getLogger(__name__)
MODELS = (*METRIC_MODELS, CLEAN)  # rows of the final_metrics table (clean: with poison=...)


def upload_summary(sweep_dir: str | Path, project: str, group: str | None = None, mode: str | None = None,
                   init_timeout: float = 15.0) -> Path:
    """A sweep's ``summary.csv`` (as a table) and PNG figures (as images) as one W&B run of its own, with those files
    and ``summary.md`` as a ``sweep-summary`` artifact: ``job_type="summary"``, ``group`` = the sweep's
    (``sweep_group``), so it sits beside the sweep's stage runs.
    Offline unless ``mode`` or ``WANDB_MODE`` says online (then bounded by ``init_timeout``, as ``wandb_logger``);
    the run is written under ``<sweep_dir>/wandb/``, whose directory is returned."""
    import wandb

    out, mode = Path(sweep_dir), mode or os.environ.get("WANDB_MODE") or "offline"

    def start(m: str) -> Any:
        return wandb.init(project=project, group=group or sweep_group(out), job_type="summary",
                          name=f"summary-{sweep_group(out)}", dir=str(out), mode=m, reinit="finish_previous",
                          settings=wandb.Settings(init_timeout=init_timeout, silent=True))

    run = bounded(start, mode)
    try:
        media: dict[str, Any] = {f"figures/{png.stem}": wandb.Image(str(png)) for png in sorted(out.glob("*.png"))}
        if (out / "summary.csv").exists():
            with (out / "summary.csv").open(newline="") as f:
                header, *rows = list(csv.reader(f))
            media["summary"] = wandb.Table(columns=header, data=rows)
        run.log(media)
        files = wandb.Artifact(f"summary-{sweep_group(out).replace('/', '_')}", type="sweep-summary")
        for path in [out / "summary.md", out / "summary.csv", *sorted(out.glob("*.png"))]:
            if path.exists():
                files.add_file(str(path))
        run.log_artifact(files)
    finally:
        run.finish()
    return Path(run.dir).parent


def log_results(loggers: list[Logger], results: dict[str, Any], run_dir: str | Path) -> None:
    """End-of-run extras on the unlearn-stage loggers, before they are closed.

    W&B: a summary of every second and split size, a ``wandb.Table`` of the final metrics per model with a
    forget-vs-retain scatter, and histograms of the per-sample loss (the score of a loss MIA, Yeom et al. 2018) for
    members (retain), forgotten samples (forget) and non-members (test) under each model. TensorBoard: the same
    histograms and the forget-vs-retain figure as an image, at the stage's last step. Histograms need ``logits.pt``
    in ``run_dir``; without it they are skipped. The extras are optional: a failure is logged as a warning and never
    fails a run whose results are complete.
    """
    offline_note(loggers)
    try:
        losses = sample_losses(Path(run_dir) / "logits.pt")
        step = int(results.get("stages", {}).get("unlearn", {}).get("steps") or 0)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                _wandb_extras(logger.experiment, results, losses)
            elif isinstance(logger, TensorBoardLogger):
                for (model, split), loss in losses.items():
                    logger.experiment.add_histogram(f"loss/{model}/{split}", loss.numpy(), step)
                logger.experiment.add_figure("forget_vs_retain", forget_retain_figure(results["metrics"]), step)
    except Exception:
        log.warning("end-of-run logger extras failed; results.json and the logged metrics are unaffected",
                    exc_info=True)


def offline_note(loggers: list[Logger]) -> str | None:
    """One console line when the run's W&B runs are offline: where they are and the ``wandb sync`` command that
    uploads them (every stage's run of this run directory); returns it, None when no W&B run is offline."""
    runs = [lg.experiment for lg in loggers if isinstance(lg, WandbLogger)]
    offline = [Path(run.dir).parents[1] for run in runs if run.offline]  # <save_dir>/wandb/offline-run-*/files
    if not offline:
        return None
    line = (f"W&B runs are offline in {offline[0]} (no account needed); upload them with: "
            f"wandb sync {offline[0]}/offline-run-*")
    log.info("%s", line)
    return line


def forget_retain_figure(metrics: dict[str, float]) -> Any:
    """Forget against retain accuracy, one point per model (the scatter W&B draws from ``final_metrics``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3.5), layout="constrained")
    ax = fig.add_subplot()
    for model in MODELS:
        if f"{model}/forget_acc" in metrics and f"{model}/retain_acc" in metrics:
            ax.scatter(metrics[f"{model}/retain_acc"], metrics[f"{model}/forget_acc"], label=model)
    ax.set(xlabel="retain accuracy", ylabel="forget accuracy", title="forget vs retain accuracy per model")
    ax.legend()
    return fig


def sample_losses(path: Path) -> dict[tuple[str, str], torch.Tensor]:
    """Per-sample cross-entropy ``{(model, split): loss}`` from a run's ``logits.pt`` (empty if it is missing)."""
    if not path.exists():
        return {}
    saved = torch.load(path, weights_only=True)
    return {(model, split): torch.nn.functional.cross_entropy(logits.float(), saved["labels"][split],
                                                              reduction="none")
            for model, by_split in saved["logits"].items() for split, logits in by_split.items()}


def metrics_table(metrics: dict[str, float]) -> tuple[list[str], list[list]]:
    """``<model>/<metric>`` keys as rows per model: ``(["model", metric, ...], [[model, value, ...], ...])``."""
    names = sorted({k.split("/", 1)[1] for k in metrics if k.split("/", 1)[0] in MODELS})
    rows = [[m, *(metrics.get(f"{m}/{n}") for n in names)] for m in MODELS if any(f"{m}/{n}" in metrics
                                                                                   for n in names)]
    return ["model", *names], rows


def _wandb_extras(run: Any, results: dict[str, Any], losses: dict[tuple[str, str], torch.Tensor]) -> None:
    import wandb

    run.summary.update({**{f"seconds/{k}": v for k, v in results.get("seconds", {}).items()},
                        **{f"sizes/{k}": v for k, v in results.get("sizes", {}).items()}})
    columns, rows = metrics_table(results.get("metrics", {}))
    table = wandb.Table(columns=columns, data=rows)
    extras: dict[str, Any] = {"final_metrics": table}
    if {"forget_acc", "retain_acc"} <= set(columns):
        extras["forget_vs_retain"] = wandb.plot.scatter(table, "retain_acc", "forget_acc",
                                                        title="forget vs retain accuracy per model")
    for (model, split), loss in losses.items():
        extras[f"loss/{model}/{split}"] = wandb.Histogram(loss.numpy())
    run.log(extras)
    if results.get("config", {}).get("logger", {}).get("wandb", {}).get("log_checkpoints"):
        run.log_artifact(checkpoint_artifact(results))


def checkpoint_artifact(results: dict[str, Any]) -> Any:
    """The three models' weights as one W&B ``model`` artifact: original and gold from the stage cache (the entries
    this run used), the unlearned model from the run directory's ``unlearned.pt``."""
    import wandb

    cfg = results["config"]
    artifact = wandb.Artifact(f"models-{Path(cfg['paths']['output_dir']).name}", type="model",
                              metadata={s: results["stages"][s].get("cache_key") for s in ("original", "gold")})
    for stage in ("original", "gold"):
        entry = Path(cfg["paths"]["cache_dir"]) / f"{stage}-{results['stages'][stage]['cache_key']}.pt"
        if entry.exists():  # absent with cache=false
            artifact.add_file(str(entry), name=f"{stage}.pt")
    artifact.add_file(str(Path(cfg["paths"]["output_dir"]) / "unlearned.pt"), name="unlearn.pt")
    return artifact
