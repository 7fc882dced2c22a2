"""What a user sees besides the results: the Python API as quiet as train.py, and resumable training without a line
per checkpoint."""

from __future__ import annotations

import logging

import lightning as L
import torch

from mu_lightning.stages import ClassifierModule
from mu_lightning.stages.classifier import ResumeCheckpoint

CHATTER = ("GPU available", "TPU available", "Tip:", "`Trainer.fit` stopped")
LIGHTNING_LOGS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def test_the_python_api_prints_none_of_lightnings_banners(capfd, caplog):
    import mu_lightning

    for name in LIGHTNING_LOGS:  # as in a fresh interpreter: another test may have quietened them already
        logging.getLogger(name).setLevel(logging.INFO)
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with caplog.at_level(logging.INFO):
        mu_lightning.unlearn(model, forget=(x[:8], y[:8]), retain=(x[8:], y[8:]), method="finetune", epochs=1)
    shown = "".join(capfd.readouterr()) + caplog.text
    assert not [c for c in CHATTER if c in shown], shown


def test_a_resume_checkpoint_is_saved_without_lightnings_weights_only_line(tmp_path, caplog):
    torch.manual_seed(0)
    module = ClassifierModule(torch.nn.Linear(4, 2), epochs=3, batch_size=8,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    from mu_lightning.data.batches import TensorBatches

    batches = TensorBatches(torch.randn(40, 4), torch.randint(0, 2, (40,)), 8)
    module.bound = "original-test"
    trainer = L.Trainer(max_epochs=3, logger=False, callbacks=[ResumeCheckpoint(tmp_path / "last.ckpt", 1)],
                        enable_checkpointing=True, enable_model_summary=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.fit(module, train_dataloaders=module.chunks(batches))
    assert (tmp_path / "last.ckpt").exists()  # saved after epochs 1 and 2
    assert "optimizer_states" in torch.load(tmp_path / "last.ckpt", weights_only=True)  # a whole state: resumable
    assert "weights_only" not in caplog.text
