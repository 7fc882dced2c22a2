"""The stage's step loop (stages/base.py): the direct step and Lightning's own path take a plain PyTorch loop's
steps to the same weights, bit for bit; global_step counts them, clipping sees unscaled gradients under a grad scaler,
train_loss is logged per epoch, and a non-finite loss rolls the weights back to the last finite step."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import OmegaConf

from mu_lightning.data.batches import TensorBatches
from mu_lightning.models import MLP
from mu_lightning.stages import ClassifierModule

TRAINER = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/trainer/cpu.yaml"))
EPOCHS, BATCH = 3, 16
X = torch.randn(600, 1, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (600,), generator=torch.Generator().manual_seed(2))
STEPS = EPOCHS * math.ceil(len(X) / BATCH)  # 38 a epoch: Lightning batches of 32 steps and of 6
PATHS = ["direct", "callback hook", "module hook"]


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def cosine(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)


class Watch(L.Callback):
    """Records which step path each Lightning batch took."""

    def __init__(self):
        self.direct, self.backwards = [], 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.direct.append(module._direct is not None)


class HookedWatch(Watch):
    """A callback with a step hook: steps must then go Lightning's way, which calls it."""

    def on_after_backward(self, trainer, module):
        self.backwards += 1


def hooked(cls):
    """``cls`` with a step hook of its own, as SalUn's gradient mask."""

    class Hooked(cls):
        backwards = 0

        def on_after_backward(self):
            self.backwards += 1

    return Hooked


class NanAt5(ClassifierModule):
    def train_step(self, batch):
        loss = F.cross_entropy(self.model(batch[0]), batch[1])
        self.step(loss * math.nan if self.steps_taken == 5 else loss)


def fit(path: str, cls=ClassifierModule, grad_clip=None, callbacks=(), **trainer_kwargs):
    torch.manual_seed(0)
    module = (hooked(cls) if path == "module hook" else cls)(
        MLP([1, 8, 8], 10), epochs=EPOCHS, batch_size=BATCH, optimizer=sgd, scheduler=cosine, grad_clip=grad_clip)
    watch = HookedWatch() if path == "callback hook" else Watch()
    trainer = L.Trainer(**{**TRAINER, "enable_progress_bar": False, **trainer_kwargs}, max_epochs=EPOCHS,
                        logger=False, callbacks=[watch, *callbacks])
    trainer.fit(module, train_dataloaders=module.chunks(TensorBatches(X, Y, BATCH, shuffle=True, seed=0)))
    return module, trainer, watch


def plain(steps: int = STEPS, grad_clip=None) -> torch.nn.Module:
    """The reference: ``steps`` steps of a loop with no Lightning, on the same batches in the same order."""
    torch.manual_seed(0)
    model = MLP([1, 8, 8], 10)
    optimizer = sgd(model.parameters())
    scheduler, batches = cosine(optimizer), TensorBatches(X, Y, BATCH, shuffle=True, seed=0)
    for _ in range(EPOCHS):
        for x, y in batches:
            if steps == 0:
                return model
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            steps -= 1
        scheduler.step()
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("grad_clip", [None, 0.05])
@pytest.mark.parametrize("path", PATHS)
def test_every_path_takes_the_plain_loops_steps(path, grad_clip):
    module, trainer, watch = fit(path, grad_clip=grad_clip)
    assert watch.direct == [path == "direct"] * (EPOCHS * 2)  # two Lightning batches an epoch
    assert watch.backwards + getattr(module, "backwards", 0) == (0 if path == "direct" else STEPS)
    assert module.steps_taken == trainer.global_step == STEPS
    assert same_weights(module.model, plain(grad_clip=grad_clip))
    assert "train_loss" in trainer.callback_metrics and not module.diverged


@pytest.mark.parametrize("path", ["direct", "callback hook", "grad scaler"])
def test_clipping_bounds_the_gradients_the_optimizer_steps_on(path):
    """Under AMP the clip must come after the scaler's unscale, or it clips gradients 65536× too large."""
    norms = []

    class Spy(L.Callback):
        def on_train_start(self, trainer, module):  # after the step, .grad still holds what it stepped on
            trainer.optimizers[0].register_step_post_hook(lambda opt, args, kwargs: norms.append(
                torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.model.parameters()])).item()))

    amp = {"precision": None, "plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]}
    _, _, watch = fit(path, grad_clip=0.01, callbacks=[Spy()], **(amp if path == "grad scaler" else {}))
    assert any(watch.direct) == (path == "direct")
    assert len(norms) == STEPS and all(n == pytest.approx(0.01, rel=1e-3) for n in norms)


@pytest.mark.parametrize("path", PATHS)
def test_divergence_stops_and_rolls_back_to_the_last_finite_step(path):
    module, trainer, _ = fit(path, cls=NanAt5)
    assert module.diverged_step == module.steps_taken == trainer.global_step == 5
    # step 4's loss, computed on the weights after 4 updates, was the last finite one
    assert same_weights(module.model, plain(steps=4))


def test_a_divergence_on_the_only_step_is_rolled_back_not_a_traceback(run_pipeline):
    """One step whose update overflows: no later loss shows it, so the end of the fit checks the weights and the
    outputs on the last batch, rolls the step back and records the divergence."""
    res = run_pipeline("unlearner.epochs=1", "unlearner.batch_size=4096", "unlearner.optimizer.lr=1e38",
                       shared_cache=True)
    stage = res["stages"]["unlearn"]
    assert stage["diverged"] and stage["diverged_step"] == 0 and stage["steps"] == 0
    assert res["metrics"]["unlearn/forget_acc"] == res["metrics"]["original/forget_acc"]  # M's weights, restored

