"""Bad Teacher (Chundawat et al., "Can Bad Teaching Induce Forgetting?", AAAI 2023, §3)."""

import copy

import torch
import torch.nn.functional as F

from mu_lightning.data.batches import TensorBatches
from mu_lightning.errors import ConfigError
from mu_lightning.unlearners.base import Pass, Unlearner, freeze, reinitialise


class BadTeacher(Unlearner):
    """The student (from M) matches the competent teacher, the frozen original M, on retain samples and an
    incompetent teacher, a randomly re-initialised copy of the architecture, on forget samples:
    KL(p_teacher ‖ p_student) at temperature T.

    Reads: forget, and a random ``retain_fraction`` of retain (the paper's 30%), shuffled together into one set
    whose labels are replaced by a forget/retain flag.
    """

    needs_frozen_original = True

    def __init__(self, model, temperature: float = 1.0, retain_fraction: float = 0.3, **train):
        super().__init__(model, **train)
        if not 0 <= retain_fraction <= 1:
            raise ConfigError(f"unlearner.retain_fraction={retain_fraction} is out of range: it must be in [0, 1]")
        self.temperature, self.retain_fraction = temperature, retain_fraction
        # drawn with the unlearning seed; kept out of the module tree like the frozen original
        self._incompetent = [freeze(reinitialise(copy.deepcopy(model)))]

    @property
    def incompetent_teacher(self) -> torch.nn.Module:
        """The random teacher of D_f; ``metric.zrf.compat`` scores ZRF against it, as the bad-teaching code does."""
        return self._incompetent[0]

    def on_fit_start(self):
        super().on_fit_start()
        self._incompetent[0].to(self.device)

    def sets(self, data, seed):
        xf, _ = data.tensors("forget")
        xr, _ = data.tensors("retain")
        keep = torch.randperm(len(xr), generator=torch.Generator().manual_seed(seed))
        xr = xr[keep[: round(self.retain_fraction * len(xr))]]
        is_forget = torch.cat([torch.ones(len(xf), dtype=torch.bool), torch.zeros(len(xr), dtype=torch.bool)])
        return {"mixed": TensorBatches(torch.cat([xf, xr]), is_forget, self.batch_size, shuffle=True, seed=seed)}

    def passes(self, epoch):
        return (Pass("mixed"),)

    def loss(self, batch):
        x, is_forget = batch["mixed"]
        with torch.no_grad():
            good, bad = self.frozen_original(x), self._incompetent[0](x)
            target = F.softmax(torch.where(is_forget[:, None], bad, good) / self.temperature, dim=1)
        student = F.log_softmax(self.model(x) / self.temperature, dim=1)
        return F.kl_div(student, target, reduction="batchmean")
