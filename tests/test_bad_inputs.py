"""Every bad input of the table in docs/errors.md, "Bad inputs": a specific message, raised before training, nothing
written."""

from __future__ import annotations

import pytest

from mu_lightning.errors import ConfigError
from mu_lightning.pipeline import run
from tests.helpers import compose_cfg

CASES = {
    "fraction_zero": (["forget.fraction=0"], r"forget.fraction=0 is out of range: it must be > 0 and < 1"),
    "fraction_one": (["forget.fraction=1.0"], r"forget.fraction=1.0 is out of range: it must be > 0 and < 1"),
    "count_too_large": (["forget.count=5000"], r"forget.count=5000 is out of range: .*training set has \d+ samples"),
    "class_not_a_label": (["forget=class", "forget.classes=[12]"], r"forget.classes=\[12\]: \[12\] not among"),
    "every_class": (["forget=class", "forget.classes=[0,1,2,3,4,5,6,7,8,9]"], r"retain set would be empty"),
    "request_removes_a_class": (["forget=indices", "forget.path={tmp}/class0.txt"],
                                r"removes every training sample of class\(es\) \[0\]"),
    "ids_file_missing": (["forget=indices", "forget.path={tmp}/nope.txt"], r"forget.path=.*nope.txt: no such file"),
    "ids_file_empty": (["forget=indices", "forget.path={tmp}/empty.txt"], r"holds no sample ids"),
    "ids_not_integers": (["forget=indices", "forget.path={tmp}/words.txt"], r"every line must be one integer"),
    "ids_out_of_range": (["forget=indices", "forget.path={tmp}/far.txt"], r"ids \[99999\] are not in the training"),
    "ids_duplicated": (["forget=indices", "forget.path={tmp}/dup.txt"], r"duplicate sample ids \[\d+\]"),
    "input_shape_mismatch": (["dataset.input_shape=[1,4,4]"], r"dataset.input_shape=\[1, 4, 4\] but the data's"),
    "too_few_classes": (["dataset.num_classes=5"], r"dataset.num_classes=5 but the labels go up to 9"),
    "model_does_not_fit": (["dataset=synthetic", "model=cnn", "dataset.input_shape=[1,1,1]"],
                           r"model=CNN does not fit inputs of shape \[1, 1, 1\]"),
    "negative_epochs": (["train.epochs=-1"], r"train.epochs=-1 must be >= 0"),
    "negative_lr": (["unlearner.optimizer.lr=-0.1"], r"unlearner.optimizer.lr=-0.1 must be > 0"),
    "zero_batch": (["unlearner.batch_size=0"], r"unlearner.batch_size=0 must be > 0"),
    "foreign_target": (["unlearner._target_=os.system"], r"unlearner._target_='os.system' is not allowed"),
    "unknown_metric_tier": (["metric.tier=fancy"], r"metric.tier='fancy' is not a tier: use one of fast, full"),
    "too_few_gold_seeds": (["metric=full", "metric.seeds=1"], r"metric.seeds=1 is too few"),
    "unsir_on_a_random_request": (["unlearner=unsir"], r"unlearner=unsir forgets whole classes only"),
    "unknown_unlearner_option": (["+unlearner.lrr=0.1"], r"unlearner.lrr is not an option of Finetune"),
    "unwritable_run_dir": (["paths.output_dir={tmp}/blocker/run"], r"paths.output_dir=.* is not writable"),
    "unwritable_cache_dir": (["paths.cache_dir={tmp}/blocker/cache"], r"paths.cache_dir=.* is not writable"),
    "nan_lr": (["train.optimizer.lr=nan"], r"train.optimizer.lr=nan is not a finite number"),
    "inf_weight_decay": (["unlearner.optimizer.weight_decay=inf"],
                         r"unlearner.optimizer.weight_decay=inf is not a finite number"),
    "string_lr": (["train.optimizer.lr=fast"], r"train.optimizer.lr='fast' is not a number: .* takes a number"),
    "list_batch_size": (["train.batch_size=[32,64]"], r"train.batch_size=\[32, 64\] is not a number: .*an integer"),
    "fractional_epochs": (["train.epochs=2.5"], r"train.epochs=2.5 is not allowed: train.epochs takes an integer"),
    "fractional_method_option": (["unlearner=scrub", "unlearner.msteps=1.5"],
                                 r"unlearner.msteps=1.5 is not allowed: SCRUB's msteps takes an integer"),
    "text_method_option": (["unlearner=salun", "unlearner.mask_ratio=half"],
                           r"unlearner.mask_ratio='half' is not allowed: SalUn's mask_ratio takes a number"),
    "number_for_a_switch": (["unlearner=salun", "unlearner.soft=1"],
                            r"unlearner.soft=1 is not allowed: SalUn's soft takes true or false"),
    "negative_seed": (["seed=-1"], r"seed=-1 is out of range: seeds are integers from 0 to 4294967295"),
    "string_split_seed": (["dataset.split_seed=abc"], r"dataset.split_seed='abc' is not a number: .* takes a seed"),
    "empty_test_split": (["dataset.test_fraction=0"], r"the test split is empty: dataset.test_fraction=0 gives it 0 "
                                                      r"of 1797 samples"),
    "trainer_max_epochs": (["+trainer.max_epochs=3"], r"trainer.max_epochs is set by the pipeline for each stage"),
    "trainer_unknown_key": (["+trainer.max_step=3"], r"trainer.max_step is not an argument of Lightning's Trainer"),
    "trainer_clipping": (["+trainer.gradient_clip_val=1.0"], r"trainer.gradient_clip_val=1.0 cannot be used: every "
                                                               r"stage steps its optimizer itself"),
    "trainer_accumulation": (["+trainer.accumulate_grad_batches=2"], r"trainer.accumulate_grad_batches=2 cannot be"),
    "ids_not_utf8": (["forget=indices", "forget.path={tmp}/latin1.txt"], r"not a UTF-8 text file \(byte 3\)"),
    "ids_arabic_digits": (["forget=indices", "forget.path={tmp}/arabic.txt"], r"the digits 0-9 only \(found '١٢'\)"),
}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "words.txt").write_text("12\nseven\n")
    (tmp_path / "far.txt").write_text("99999\n")
    (tmp_path / "blocker").write_text("a file where a directory should be")
    (tmp_path / "latin1.txt").write_bytes("12\n\xe9\n".encode("latin-1"))
    (tmp_path / "arabic.txt").write_text("١٢\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_early_with_a_specific_message(files, case):
    overrides, message = CASES[case]
    overrides = [o.replace("{tmp}", str(files)) for o in overrides]
    ids, labels = _train_ids(files)
    (files / "dup.txt").write_text(f"{ids[0]}\n{ids[0]}\n")  # a valid training id, listed twice
    (files / "class0.txt").write_text("".join(f"{i}\n" for i in ids[labels == 0].tolist()))
    cfg = compose_cfg(files, overrides, fast=False)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    out = files / "run"
    assert not (out / "results.json").exists() and not (out / "logits.pt").exists()
    assert not list((files / "cache").glob("*.pt")) if (files / "cache").is_dir() else True


def _train_ids(tmp_path):
    """The digits training ids and labels, as the default config splits them."""
    from hydra.utils import instantiate

    from mu_lightning.data import UnlearningDataModule
    cfg = compose_cfg(tmp_path, [], fast=False)
    data = UnlearningDataModule(source=instantiate(cfg.dataset.source), forget=lambda ids, y: ids[:1])
    data.setup()
    return data.ids["train"], data.samples.y[data.ids["train"]]


def test_a_gpu_trainer_without_a_gpu_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = compose_cfg(tmp_path, ["trainer=gpu"], fast=False)
    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu but torch sees no GPU here .* use trainer=cpu"):
        run(cfg)
    assert not (tmp_path / "run" / "forget_ids.txt").exists()
