"""UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023, §III): noise, impair, repair."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mu_lightning.data.batches import TensorBatches
from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import TRAIN_MODES, Pass, Unlearner, eval_mode

REPAIR_OPTIMIZERS = ("fresh", "continue")  # a new optimizer for the repair, or the impair's carried over


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unlearner.{name}={value!r} is not one of {', '.join(choices)}")


class UNSIR(Unlearner):
    """Class forgetting: learn error-maximising noise for each forgotten class, then train on it (impair), then on
    retained samples alone (repair).

    Noise N (``noise_batch_size`` samples per class) minimises −CE(f(N), y_f) + ``noise_l2``·mean‖N‖² with Adam for
    ``noise_steps`` steps. Impair: ``impair_epochs`` over ``noise_copies`` copies of the first ``noise_per_copy``
    images of each N (null: all of them) labelled y_f, together with up to ``retain_per_class`` retain samples of each
    retained class; repair: ``repair_epochs`` over those retain samples, in batches of ``repair_batch_size`` (null:
    ``batch_size``). Reads: retain, and which classes the request forgets; never D_f's samples.

    The authors' choices, each an option: both reference implementations put only 3 noise images per copy in the
    impair set (their loader loops over ``batch[0].size(0)``, the channel count of one image, not the batch), so
    ``noise_per_copy`` is 3 there; both start a new optimizer for the repair (``repair_optimizer: fresh``; ``continue``
    carries the impair optimizer's state over), the UNSIR notebook at a lower lr (``repair_lr``; null: the impair lr).
    ``noise_mode`` is the mode M is in while the noise is optimised: ``train`` as both references (BatchNorm on batch
    statistics, its running statistics moved by the noise), ``eval`` to leave M's statistics as they were.

    Its epochs are ``impair_epochs + repair_epochs``, so it takes the training options other than ``epochs``.
    """

    reads = ("retain",)

    def __init__(self, model, noise_batch_size: int = 32, noise_steps: int = 25, noise_lr: float = 0.1,
                 noise_l2: float = 0.1, noise_copies: int = 80, noise_per_copy: int | None = 3,
                 retain_per_class: int = 500, impair_epochs: int = 1, repair_epochs: int = 1, noise_mode: str = "train",
                 repair_optimizer: str = "fresh", repair_lr: float | None = None, repair_batch_size: int | None = None,
                 batch_size: int = 64, optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
                 grad_clip: float | None = None):
        super().__init__(model, epochs=impair_epochs + repair_epochs, batch_size=batch_size, optimizer=optimizer,
                         scheduler=scheduler, grad_clip=grad_clip)
        check_choice("noise_mode", noise_mode, TRAIN_MODES)
        check_choice("repair_optimizer", repair_optimizer, REPAIR_OPTIMIZERS)
        for name, value in (("noise_per_copy", noise_per_copy), ("repair_lr", repair_lr),
                            ("repair_batch_size", repair_batch_size)):
            if value is not None and not value > 0:
                raise ConfigError(f"unlearner.{name}={value} must be > 0, or null")
        self.noise_mode, self.repair_optimizer, self.repair_lr = noise_mode, repair_optimizer, repair_lr
        self.noise_batch_size, self.noise_steps, self.noise_lr, self.noise_l2 = noise_batch_size, noise_steps, \
            noise_lr, noise_l2
        self.noise_copies, self.noise_per_copy, self.retain_per_class = noise_copies, noise_per_copy, retain_per_class
        self.impair_epochs, self.repair_batch_size = impair_epochs, repair_batch_size or batch_size
        self.noise: dict[int, torch.Tensor] = {}

    @classmethod
    def check_request(cls, data):
        classes = data.forgotten_classes()
        forget_y = data.tensors("forget")[1]
        if not classes or not torch.isin(forget_y, torch.tensor(classes)).all():
            raise ConfigError(f"unlearner=unsir forgets whole classes only (forget=class forget.classes=[...]); this "
                              f"forget request holds {len(forget_y)} samples of classes {forget_y.unique().tolist()} "
                              "and is not every training sample of its classes")

    def edit(self, data):
        with eval_mode(self.model):  # noise_mode "train": M's BatchNorm statistics follow the noise, as the authors'
            self.model.train(self.noise_mode == "train")
            for c in data.forgotten_classes():
                self.noise[c] = self.error_maximising_noise(c, data.samples.x.shape[1:])
        self.model.zero_grad(set_to_none=True)

    def error_maximising_noise(self, c: int, shape) -> torch.Tensor:
        """``noise_batch_size`` inputs of ``shape`` that M classifies as far from class ``c`` as it can."""
        device = next(self.model.parameters()).device  # the trainer's (Unlearner.on_device)
        noise = torch.randn(self.noise_batch_size, *shape).to(device).requires_grad_(True)  # drawn on the CPU RNG
        opt = torch.optim.Adam([noise], lr=self.noise_lr)
        target = torch.full((self.noise_batch_size,), c, device=device)
        for _ in range(self.noise_steps):
            opt.zero_grad()
            noise.grad = self.counted(self.noise_grad, noise, target, samples=self.noise_batch_size)
            opt.step()
        return noise.detach().cpu()  # joins the retain samples (on the CPU) in ``sets``

    def noise_grad(self, noise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The gradient in ``noise`` of −CE(f(N), y_f) + ``noise_l2``·mean‖N‖² (M's weights get none: only N moves)."""
        size = noise.pow(2).flatten(1).sum(1).mean()
        loss = -F.cross_entropy(self.model(noise), target) + self.noise_l2 * size
        (g,) = torch.autograd.grad(loss, noise)
        return g

    def passes(self, epoch):
        return (Pass("impair"),) if epoch < self.impair_epochs else (Pass("repair"),)

    def sets(self, data, seed):
        xr, yr = data.tensors("retain")
        order = torch.randperm(len(yr), generator=torch.Generator().manual_seed(seed))
        keep = torch.cat([order[yr[order] == c][: self.retain_per_class] for c in yr.unique()])
        xr, yr = xr[keep], yr[keep]
        kept = {c: n[: self.noise_per_copy] for c, n in self.noise.items()}  # [:None]: every noise image
        xn = torch.cat([n.repeat(self.noise_copies, *[1] * (n.dim() - 1)) for n in kept.values()])
        yn = torch.cat([torch.full((self.noise_copies * len(n),), c) for c, n in kept.items()])
        return {"impair": TensorBatches(torch.cat([xn, xr]), torch.cat([yn, yr]), self.batch_size, True, seed),
                "repair": TensorBatches(xr, yr, self.repair_batch_size, True, seed + 1)}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.current_epoch == self.impair_epochs:  # the first repair epoch
            self.start_repair(self.optimizers().optimizer)

    def start_repair(self, optimizer: torch.optim.Optimizer) -> None:
        """The repair's optimizer: ``fresh`` forgets the impair's state (Adam's moments, momentum), as a new
        optimizer of the same kind would start; ``repair_lr`` sets its learning rate. A scheduler keeps stepping."""
        if self.repair_optimizer == "fresh":
            optimizer.state.clear()
        if self.repair_lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = self.repair_lr

    def loss(self, batch):
        ((x, y),) = batch.values()
        return F.cross_entropy(self.model(x), y)
