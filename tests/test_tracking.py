"""Tracking as a researcher reads it back: the offline W&B runs (group, names, tags, summary-only metrics, the gold
line, the sweep's summary run), the TensorBoard event files (hparams, config text, histograms at the last step), the
callbacks group, the debug group and the console."""

from __future__ import annotations

import io
import json
import logging
import shutil
import struct
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mu_lightning.callbacks import configured
from mu_lightning.errors import ConfigError
from mu_lightning.tracking import console, extras, loggers, naming
from tests.helpers import compose_cfg
from tests.test_loggers import _keys, wandb_runs


def _start(records):
    (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    return start


def _history(records, key: str) -> list[float]:
    return [json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "history"
            for i in r.history.item if (i.key or "/".join(i.nested_key)) == key]


def tensorboard_events(event_dir: Path) -> list:
    """Every ``Event`` of the event files in ``event_dir`` (TFRecord framing: see ``tensorboard_values``)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            events.append(Event.FromString(data[pos + 12:pos + 12 + length]))
            pos += 16 + length
    return events


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One run with all three loggers and trained (not cached) original and gold models: (results, run dir)."""
    from mu_lightning.pipeline import run

    tmp = tmp_path_factory.mktemp("tracked")
    cfg = compose_cfg(tmp, ["logger=[csv,tensorboard,wandb]", "train.epochs=2", "unlearner.epochs=2",
                            "callbacks.forget_retain.every_n_steps=5", "tags=[paper]"])
    run(cfg)
    return json.loads((tmp / "run" / "results.json").read_text()), tmp / "run"


def test_wandb_runs_are_grouped_named_and_tagged_by_what_they_are(tracked):
    results, run_dir = tracked
    runs = wandb_runs(run_dir)
    starts = {stage: _start(records) for stage, records in runs.items()}
    keys = {s: results["stages"][s]["cache_key"][:8] for s in ("original", "gold")}
    assert {s.run_group for s in starts.values()} == {naming.sweep_group(run_dir)}  # a single run: its own group
    assert {stage: s.job_type for stage, s in starts.items()} == {s: s for s in ("original", "gold", "unlearn")}
    assert starts["original"].display_name == f"original-synthetic-mlp-s0-{keys['original']}"
    assert starts["gold"].display_name == f"gold-synthetic-mlp-random-s0-{keys['gold']}"
    assert starts["unlearn"].display_name == "finetune-s0-epochs=2"  # method, seed, the overridden option
    assert list(starts["original"].tags) == ["dataset:synthetic", "model:mlp", "paper"]
    assert list(starts["unlearn"].tags) == ["dataset:synthetic", "model:mlp", "forget:random", "unlearner:finetune",
                                            "paper"]
    configs = {stage: {i.key: json.loads(i.value_json) for i in s.config.update} for stage, s in starts.items()}
    assert "unlearner" not in configs["original"] and "unlearner" not in configs["gold"]  # the stage's own config
    assert configs["gold"]["cache_key"] == results["stages"]["gold"]["cache_key"]
    assert configs["unlearn"]["unlearner"]["epochs"] == 2 and configs["unlearn"]["tags"] == ["paper"]


def test_final_metrics_are_in_the_summary_only_and_gold_is_beside_the_trajectory(tracked):
    results, run_dir = tracked
    records = wandb_runs(run_dir)["unlearn"]
    history, summary = _keys(records, "history"), _keys(records, "summary")
    final = {*(k for k, v in results["metrics"].items() if v is not None), "seconds/unlearn", "seconds/evaluate"}
    assert final <= summary and not final & history
    for metric in ("forget_acc", "retain_acc", "mia_loss_auc"):
        assert len(_history(records, f"trajectory/{metric}")) >= 2
        gold = _history(records, f"trajectory/gold_{metric}")
        assert len(gold) >= 2 and gold == pytest.approx([results["metrics"][f"gold/{metric}"]] * len(gold))
    assert _history(records, "trajectory/forget_acc")[-1] == pytest.approx(results["metrics"]["unlearn/forget_acc"])


def test_tensorboard_has_hparams_with_metrics_config_text_and_last_step_histograms(tracked):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    results, run_dir = tracked
    steps = results["stages"]["unlearn"]["steps"]
    hparams = OmegaConf.load(run_dir / "tensorboard" / "unlearn" / "hparams.yaml")
    assert hparams.stage == "unlearn" and hparams.choices.unlearner == "finetune" and hparams.train.epochs == 2
    assert OmegaConf.load(run_dir / "tensorboard" / "gold" / "hparams.yaml").cache_key == \
        results["stages"]["gold"]["cache_key"]
    values = [(e.step, v) for e in tensorboard_events(run_dir / "tensorboard" / "unlearn") for v in e.summary.value]
    (experiment,) = [v for _, v in values if v.tag == "_hparams_/experiment"]
    data = HParamsPluginData.FromString(experiment.metadata.plugin_data.content)
    headline = {k for k in loggers.HEADLINE if results["metrics"].get(k) is not None}
    assert headline and {m.name.tag for m in data.experiment.metric_infos} == headline
    assert {"unlearner/epochs", "seed"} <= {h.name for h in data.experiment.hparam_infos}
    (text,) = [v for _, v in values if v.tag.startswith("config")]
    assert "stage: unlearn" in text.tensor.string_val[0].decode()
    (table,) = [v.tensor.string_val[0].decode() for _, v in values if v.tag.startswith("final_metrics")]
    assert all(f"| {k} |" in table for k, v in results["metrics"].items() if v is not None)  # every number as text
    scalars = {v.tag for _, v in values if v.HasField("simple_value")}
    assert scalars - {"train_loss", "epoch"} - headline <= {t for t in scalars if t.startswith("trajectory/")}
    histograms = {(step, v.tag) for step, v in values if v.histo.num}
    assert histograms and {step for step, _ in histograms} == {steps}
    assert any(v.tag == "forget_vs_retain" and v.image.height for _, v in values)


def test_the_sweep_summary_is_a_wandb_run_of_its_own(tracked, tmp_path):
    from mu_lightning.callbacks.aggregate import AggregateSweep

    _, run_dir = tracked
    sweep = tmp_path / "2024-01-01" / "12-00-00"
    shutil.copytree(run_dir, sweep / "0", ignore=shutil.ignore_patterns("wandb"))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}},
                               "logger": {"wandb": {"project": "test", "group": None, "mode": "offline"}}})
    AggregateSweep().on_multirun_end(config)
    (records,) = wandb_runs(sweep).values()
    start = _start(records)
    assert (start.job_type, start.run_group) == ("summary", "2024-01-01/12-00-00")
    history = _keys(records, "history")
    assert "summary/_type" in history
    assert {f"figures/{p.stem}/_type" for p in sweep.glob("*.png")} <= history and list(sweep.glob("*.png"))
    assert [r.artifact.type for r in records if r.WhichOneof("record_type") == "artifact"][-1] == "sweep-summary"


def test_callbacks_none_runs_without_a_trajectory(run_pipeline, tmp_path):
    res = run_pipeline("callbacks=none", "logger=csv", shared_cache=True)
    header = (tmp_path / "run" / "csv" / "unlearn" / "metrics.csv").read_text().splitlines()[0]
    assert res["metrics"]["unlearn/forget_acc"] is not None and "trajectory/" not in header


@pytest.mark.parametrize("overrides,message", [
    (["+callbacks.x={_target_: mu_lightning.callbacks.forget_retain.Nope}"], "callbacks.x._target_="),
    (["+callbacks.x={_target_: mu_lightning.callbacks.forget_retain.METRICS}"], "not a Lightning Callback"),
    (["callbacks.forget_retain.stages=[unlearn,distill]"], "names ['distill']: the stages are"),
    (["callbacks=early_stopping", "callbacks.forget_retain=null"],
     "callbacks.early_stopping.monitor='trajectory/forget_acc' is not logged in the unlearn stage"),
    (["callbacks=early_stopping", "callbacks.early_stopping.stages=[gold]"], "is not logged in the gold stage"),
])
def test_callback_entries_are_checked_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        configured.check(compose_cfg(tmp_path, overrides))


def test_unknown_callbacks_option_lists_the_options(tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="Available options in 'callbacks'") as err:
        compose_cfg(tmp_path, ["callbacks=nope"])
    assert "early_stopping" in str(err.value) and "none" in str(err.value)


def test_early_stopping_monitors_the_trajectory(run_pipeline):
    """EarlyStopping stops as soon as trajectory/forget_acc is below a threshold every value meets: one epoch."""
    full = run_pipeline("logger=none", "unlearner.epochs=3", shared_cache=True)
    stopped = run_pipeline("logger=none", "unlearner.epochs=3", "callbacks=early_stopping",
                           "+callbacks.early_stopping.stopping_threshold=1.01", shared_cache=True, out="stopped")
    assert stopped["stages"]["unlearn"]["steps"] * 3 == full["stages"]["unlearn"]["steps"]


def test_debug_fast_is_a_small_one_epoch_run_that_writes_no_cache(run_pipeline, tmp_path):
    res = run_pipeline("debug=fast", "logger=none")
    assert res["config"]["train"]["epochs"] == 1 and res["config"]["unlearner"]["epochs"] == 1
    assert res["sizes"]["train"] + res["sizes"]["val"] + res["sizes"]["test"] == 300
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_debug_knobs_are_checked(tmp_path):
    from mu_lightning.runtime import debug

    with pytest.raises(ConfigError, match="debug.max_samples=0 must be null or an integer >= 1"):
        debug.check(compose_cfg(tmp_path, ["debug=fast", "debug.max_samples=0"]))


def test_run_title_names_method_forget_setting_and_seed(tmp_path):
    cfg = compose_cfg(tmp_path, ["unlearner=gradient_ascent", "seed=3", "forget=class", "forget.classes=[2]"])
    assert naming.run_title(cfg) == "gradient_ascent on synthetic/mlp, forget class(classes=[2]), seed 3"
    cfg = compose_cfg(tmp_path, ["model._target_=mu_lightning.models.CNN", "~model.hidden"])
    assert naming.run_title(cfg).startswith("finetune on synthetic/CNN, ")  # its own model, not mlp's name


def test_table_goes_to_the_log_file_not_the_console(tmp_path):
    root, stream = logging.getLogger(), io.StringIO()
    handlers = [logging.FileHandler(tmp_path / "train.log"), logging.StreamHandler(stream)]
    for handler in handlers:
        root.addHandler(handler)
    try:
        console.to_log_files("result table:\n| model |")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
    assert (tmp_path / "train.log").read_text() == "result table:\n| model |\n" and stream.getvalue() == ""


def test_job_prefix_marks_each_line_once_across_handlers():
    streams = [io.StringIO(), io.StringIO()]
    logger = logging.getLogger("test_tracking.prefix")
    prefix = console.JobPrefix("#3 finetune")
    for stream in streams:
        handler = logging.StreamHandler(stream)
        handler.addFilter(prefix)
        logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    logger.info("trained in %.1f s (100%%)", 2.0)
    assert [s.getvalue() for s in streams] == ["#3 finetune trained in 2.0 s (100%)\n"] * 2


def test_config_tree_is_printed_and_saved_unless_switched_off(tmp_path, capsys):
    cfg = compose_cfg(tmp_path, ["extras.print_config=full"])
    (tmp_path / "run").mkdir()
    console.show_config(cfg)
    shown = capsys.readouterr().out
    assert "unlearner" in shown and "task_name" in shown and "every_n_steps: 25" in shown
    assert "every_n_steps: 25" in (tmp_path / "run" / "config_tree.log").read_text()
    (tmp_path / "run" / "config_tree.log").unlink()
    console.show_config(compose_cfg(tmp_path, ["extras.print_config=false"]))
    assert capsys.readouterr().out == "" and not (tmp_path / "run" / "config_tree.log").exists()


def test_a_plain_run_shows_its_choices_and_overrides_in_two_lines(tmp_path, capsys, caplog):
    (tmp_path / "run").mkdir()
    with caplog.at_level(logging.INFO, logger="mu_lightning"):
        console.show_config(compose_cfg(tmp_path, ["unlearner=scrub", "seed=3"]))  # extras.print_config: short
    assert capsys.readouterr().out == ""  # no tree
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("config   dataset=synthetic model=mlp forget=random unlearner=scrub")
    assert "unlearner=scrub seed=3" in lines[1] and "config_tree.log" in lines[1]
    assert "every_n_steps: 25" in (tmp_path / "run" / "config_tree.log").read_text()  # the whole tree, in the file


@pytest.mark.parametrize("mode", ["short", "full"])
def test_a_sweep_prints_the_config_for_its_first_job_only(tmp_path, capsys, caplog, mode):
    shown = []
    for job in (0, 1, 2):
        (tmp_path / str(job)).mkdir()
        cfg = compose_cfg(tmp_path, ["hydra.mode=MULTIRUN", f"hydra.job.num={job}", f"extras.print_config={mode}",
                                     f"paths.output_dir={tmp_path / str(job)}"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mu_lightning"):
            console.show_config(cfg)
        shown.append(capsys.readouterr().out + "".join(r.getMessage() for r in caplog.records))
        assert (tmp_path / str(job) / "config_tree.log").exists()  # every job keeps its config
    assert shown[0] and shown[1:] == ["", ""]


def test_debug_options_log_what_they_changed(tmp_path, caplog):
    from mu_lightning.runtime import debug

    cfg = compose_cfg(tmp_path, ["debug=fast"])
    with caplog.at_level(logging.DEBUG, logger="mu_lightning"):
        debug.apply_epochs(cfg)
        debug.apply_epochs(cfg)  # applied again (the command line, then the pipeline): said once
    assert [r.getMessage() for r in caplog.records] == ["debug.epochs=1: train.epochs=1, unlearner.epochs=1"]
    assert cfg.train.epochs == 1


def test_the_trajectory_is_kept_in_the_run_directory_whatever_the_logger(run_pipeline, tmp_path):
    from mu_lightning.tracking import report

    run_pipeline("logger=tensorboard", "callbacks.forget_retain.every_n_steps=5", shared_cache=True)
    run = tmp_path / "run"
    assert not (run / "csv").exists() and (run / "trajectory" / "unlearn.csv").exists()
    assert set(report.read_trajectory(run)) == set(report.TRAJECTORY)
    run_pipeline("logger=none", shared_cache=True, out="quiet")
    assert not (tmp_path / "quiet" / "trajectory").exists()  # logger=none logs nothing


def test_offline_wandb_runs_are_announced_with_the_sync_command(tmp_path, caplog):
    run = loggers.wandb_logger(naming.StageRun("unlearn", "finetune-s0", {"seed": 0}), save_dir=str(tmp_path),
                               project="test", mode="offline")
    try:
        with caplog.at_level(logging.INFO, logger="mu_lightning"):
            line = extras.offline_note([run])
    finally:
        loggers.close([run], ok=True)
    assert line == (f"W&B runs are offline in {tmp_path / 'wandb'} (no account needed); upload them with: "
                    f"wandb sync {tmp_path / 'wandb'}/offline-run-*") and line in caplog.text
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert extras.offline_note([]) is None


def test_progress_bar_counts_epochs_and_shows_stage_and_loss(tmp_path):
    import lightning as L
    import torch

    from mu_lightning.callbacks.progress import StageProgressBar
    from mu_lightning.data.batches import TensorBatches
    from mu_lightning.stages import ClassifierModule

    torch.manual_seed(0)
    module = ClassifierModule(torch.nn.Linear(4, 2), epochs=3, batch_size=8,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    batches = TensorBatches(torch.randn(40, 4), torch.randint(0, 2, (40,)), 8)
    bar = StageProgressBar("gold")
    trainer = L.Trainer(max_epochs=3, logger=False, callbacks=[bar], enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=module.chunks(batches))
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total, bar.train_progress_bar.desc) == (3, 3, "gold: ")
    shown = bar.get_metrics(trainer, module)
    assert "v_num" not in shown and shown["loss"] == f"{module.running_loss:.4f}"
