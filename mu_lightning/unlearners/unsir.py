"""UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023, §III): noise, impair, repair."""

import torch
import torch.nn.functional as F

from mu_lightning.data.batches import TensorBatches
from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import TRAIN_MODES, Pass, Unlearner, eval_mode


class UNSIR(Unlearner):
    """Class forgetting: learn error-maximising noise for each forgotten class, then train on it (impair), then on
    retained samples alone (repair).

    Noise N (``noise_batch_size`` samples per class) minimises −CE(f(N), y_f) + ``noise_l2``·mean‖N‖² with Adam for
    ``noise_steps`` steps. Impair: ``impair_epochs`` over ``noise_copies`` copies of each N labelled y_f together with
    up to ``retain_per_class`` retain samples of each retained class; repair: ``repair_epochs`` over those retain
    samples. Reads: retain, and which classes the request forgets; never D_f's samples. ``noise_mode`` is the mode
    M is in while the noise is optimised: ``train`` as both reference implementations (BatchNorm on batch statistics,
    its running statistics moved by the noise), ``eval`` to leave M's statistics as they were.

    Its epochs are ``impair_epochs + repair_epochs``, so it takes the training options other than ``epochs``.
    """

    reads = ("retain",)

    def __init__(self, model, noise_batch_size: int = 32, noise_steps: int = 25, noise_lr: float = 0.1,
                 noise_l2: float = 0.1, noise_copies: int = 80, retain_per_class: int = 500, impair_epochs: int = 1,
                 repair_epochs: int = 1, noise_mode: str = "train", batch_size: int = 64, optimizer=None,
                 scheduler=None, grad_clip=None):
        super().__init__(model, epochs=impair_epochs + repair_epochs, batch_size=batch_size, optimizer=optimizer,
                         scheduler=scheduler, grad_clip=grad_clip)
        if noise_mode not in TRAIN_MODES:
            raise ConfigError(f"unlearner.noise_mode={noise_mode!r} is not one of {', '.join(TRAIN_MODES)}")
        self.noise_mode = noise_mode
        self.noise_batch_size, self.noise_steps, self.noise_lr, self.noise_l2 = noise_batch_size, noise_steps, \
            noise_lr, noise_l2
        self.noise_copies, self.retain_per_class, self.impair_epochs = noise_copies, retain_per_class, impair_epochs
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
        xn = torch.cat([n.repeat(self.noise_copies, *[1] * (n.dim() - 1)) for n in self.noise.values()])
        yn = torch.cat([torch.full((self.noise_copies * len(n),), c) for c, n in self.noise.items()])
        return {"impair": TensorBatches(torch.cat([xn, xr]), torch.cat([yn, yr]), self.batch_size, True, seed),
                "repair": TensorBatches(xr, yr, self.batch_size, True, seed + 1)}

    def loss(self, batch):
        ((x, y),) = batch.values()
        return F.cross_entropy(self.model(x), y)
