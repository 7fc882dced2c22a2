"""The GPU data path (conf/trainer/gpu.yaml: data_path), checked on the CPU: samples held once as uint8 pixels where
that is exact, batches gathered, decoded, cropped and flipped where they are held, the same numbers as the host path
at float32."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.augment import CropFlip
from mu_lightning.data.batches import Resident, ResidentBatches, training_device
from mu_lightning.data.sources import Samples, standardise
from mu_lightning.models import CNN
from mu_lightning.stages import ClassifierModule


def pixel_samples(n: int = 160) -> Samples:
    """Random 3×8×8 images read as uint8 and standardised as the image sources do."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8).float() / 255
    return Samples(x=x, y=torch.randint(0, 4, (n,), generator=gen), pixel_stats=standardise(x, None))


def datamodule(samples: Samples) -> UnlearningDataModule:
    data = UnlearningDataModule(source=lambda: samples, forget=lambda ids, y: ids[:12], test_fraction=0.1,
                                val_fraction=0.0, augment=CropFlip(padding=2, flip=True))
    data.setup()
    return data


def test_pixels_are_held_as_uint8_and_decode_bit_for_bit():
    samples = pixel_samples()
    resident = Resident(samples.x, samples.y, "cpu", samples.pixel_stats)
    assert resident.uint8 and resident.x.dtype == torch.uint8 and resident.x.shape == samples.x.shape
    ids = torch.tensor([5, 0, 77, 3])
    x, y = resident.take(ids)
    assert x.dtype == torch.float32 and torch.equal(x, samples.x[ids]) and torch.equal(y, samples.y[ids])


def test_inputs_that_are_not_pixels_stay_float32():
    x = torch.randn(20, 1, 4, 4)  # e.g. the synthetic Gaussian data: no uint8 code gives them back
    resident = Resident(x, torch.zeros(20, dtype=torch.int64), "cpu")
    assert not resident.uint8 and resident.x.dtype == torch.float32
    assert torch.equal(resident.take(torch.arange(20))[0], x)


@pytest.mark.parametrize("channels_last", [False, True])
def test_resident_batches_equal_the_host_batches(channels_last):
    host, device = datamodule(pixel_samples()), datamodule(pixel_samples())
    device.hold_on("cpu", channels_last=channels_last)
    a = host.batches("retain", 32, shuffle=True, seed=3, augment=True)
    b = device.batches("retain", 32, shuffle=True, seed=3, augment=True)
    assert isinstance(b, ResidentBatches) and len(a) == len(b)
    for _ in range(2):  # two epochs: the order and the crops are drawn again, alike
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert xb.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert not torch.equal(next(iter(a))[0], host.tensors("retain")[0][:32])  # augmented and shuffled indeed


def fit(data: UnlearningDataModule, channels_last: bool = False) -> dict[str, torch.Tensor]:
    L.seed_everything(0, verbose=False)
    model = CNN([3, 8, 8], 4, channels=[4, 8])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    module = ClassifierModule(model, epochs=3, batch_size=32,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", deterministic=True, max_epochs=3,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False)
    trainer.fit(module, train_dataloaders=module.chunks(data.batches("retain", 32, shuffle=True, seed=1,
                                                                     augment=True)))
    assert module.steps_taken == 3 * 5  # 132 retain samples, batches of 32
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_few_steps_on_the_device_path_give_the_host_paths_weights():
    host = fit(datamodule(pixel_samples()))
    resident = datamodule(pixel_samples())
    resident.hold_on("cpu")
    assert all(torch.equal(v, host[k]) for k, v in fit(resident).items())
    layout = datamodule(pixel_samples())
    layout.hold_on("cpu", channels_last=True)
    # channels-last may pick other convolution kernels: the same weights up to float32 rounding
    assert all(torch.allclose(v, host[k], atol=1e-5) for k, v in fit(layout, channels_last=True).items())


def test_the_training_device_follows_the_trainer_settings(monkeypatch):
    assert training_device({"accelerator": "cpu", "devices": 1}) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training_device({"accelerator": "gpu", "devices": -1}) == torch.device("cuda", 1)
    assert training_device({"accelerator": "gpu", "devices": [2, 5]}) == torch.device("cuda", 5)


def test_a_run_on_the_device_path_gives_the_host_paths_numbers(run_pipeline):
    args = ("unlearner=finetune", "callbacks.forget_retain=null", "cache=false", "train.epochs=2",
            "unlearner.epochs=1")
    host = run_pipeline(*args, out="host")
    device = run_pipeline(*args, "+data_path.on_device=true", "+data_path.channels_last=true", out="device")
    for key in ("original/retain_acc", "gold/test_acc", "unlearn/forget_acc", "unlearn/test_acc",
                "unlearn/flops"):
        assert device["metrics"][key] == host["metrics"][key], key
