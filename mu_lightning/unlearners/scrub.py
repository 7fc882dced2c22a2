"""SCRUB and SCRUB+R (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023, §3 and §3.2)."""

import torch
import torch.nn.functional as F

from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Pass, Unlearner, eval_mode


class SCRUB(Unlearner):
    """A student started from M moves away from the teacher, the frozen original M, on D_f and stays close to it
    on D_r.

    Epoch e passes over D_f with max steps (minimise −d) while e < ``msteps``, then over D_r with min steps
    (γ·CE + α·d), where d = KL(p_teacher ‖ p_student)·T² at temperature T; the last epochs are min-only and restore
    utility (SCRUB's ``train_distill`` loop). Reads: forget and retain; with ``rewind`` (SCRUB+R) also val.

    SCRUB+R keeps each epoch's weights and returns those whose forget error is closest to the final model's error
    on a held-out proxy from the val split: all of val for a random request, val samples of the forgotten classes
    for a class-wise one. The gold model is never consulted.
    """

    needs_frozen_original = True

    def __init__(self, model, msteps: int = 2, temperature: float = 4.0, alpha: float = 0.001, gamma: float = 0.99,
                 rewind: bool = False, forget_batch_size: int | None = None, retain_batch_size: int | None = None,
                 **train):
        super().__init__(model, **train)
        for name, size in (("forget_batch_size", forget_batch_size), ("retain_batch_size", retain_batch_size)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ConfigError(f"unlearner.{name}={size!r} must be a positive integer or null (batch_size)")
        self.set_batch_sizes = {"forget": forget_batch_size, "retain": retain_batch_size}
        if not 0 <= msteps <= self.epochs:
            raise ConfigError(f"unlearner.msteps={msteps} is out of range: the max steps run in the first msteps "
                              f"epochs, so 0 <= msteps <= unlearner.epochs={self.epochs}")
        self.msteps, self.temperature, self.alpha, self.gamma, self.rewind = msteps, temperature, alpha, gamma, rewind
        self.reads = ("forget", "retain", "val") if rewind else ("forget", "retain")
        self.checkpoints: list[tuple[dict, float]] = []  # (weights, forget error) after each epoch, for SCRUB+R

    def set_batch_size(self, name):
        return self.set_batch_sizes.get(name) or self.batch_size

    def passes(self, epoch):
        return (Pass("forget"), Pass("retain")) if epoch < self.msteps else (Pass("retain"),)

    def distance(self, student_logits, x):
        with torch.no_grad():
            original = F.softmax(self.frozen_original(x) / self.temperature, dim=1)
        student = F.log_softmax(student_logits / self.temperature, dim=1)
        return F.kl_div(student, original, reduction="batchmean") * self.temperature**2

    def loss(self, batch):
        if "forget" in batch:
            x, _ = batch["forget"]
            return -self.distance(self.model(x), x)
        x, y = batch["retain"]
        logits = self.model(x)
        return self.gamma * F.cross_entropy(logits, y) + self.alpha * self.distance(logits, x)

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        if self.rewind:
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.checkpoints.append((weights, self.error(*self.data.tensors("forget"))))

    def unlearn(self, data, make_trainer, seed):
        super().unlearn(data, make_trainer, seed)
        if self.rewind and self.checkpoints:
            target = self.error(*self.proxy(data))
            # ties go to the latest epoch: it has had the most min steps, so the best utility
            weights, _ = min(reversed(self.checkpoints), key=lambda c: abs(c[1] - target))
            self.model.load_state_dict(weights)

    def proxy(self, data):
        """Held-out samples from the forget set's distribution: val, or val's samples of the forgotten classes."""
        x, y = data.tensors("val")
        classes = data.forgotten_classes()
        if classes:
            keep = torch.isin(y, torch.tensor(classes))
            if not keep.any():
                raise ConfigError(f"unlearner.rewind=true needs val samples of the forgotten classes {classes}, and "
                                  "the val split has none: raise dataset.val_fraction or set rewind=false")
            x, y = x[keep], y[keep]
        return x, y

    @torch.no_grad()
    def error(self, x, y) -> float:
        device = next(self.model.parameters()).device
        with eval_mode(self.model):
            return (self.model(x.to(device)).argmax(1) != y.to(device)).float().mean().item()
