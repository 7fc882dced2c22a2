"""Fisher forgetting: noise each weight by the inverse of its retain-set Fisher (Golatkar et al., CVPR 2020, §4)."""

import torch

from mu_lightning.unlearners.base import OneShotUnlearner, eval_mode


class Fisher(OneShotUnlearner):
    """One-shot edit: θ = μ + √var ⊙ N(0, I), var = α·min(1/(h + 1e-8), 1e3) with h = E_x Σ_y p(y|x)·(∇CE(x, y))²
    on D_r (Unlearn-Sparse ``fisher_new``). Weights D_r depends on get little noise, the rest much.

    As in the reference: var is averaged over dim 1 of matrices, the head's var is capped at 1e2 and ×10, so is that
    of every 1-d tensor (biases, BatchNorm); for class-wise forgetting the head rows of the forgotten classes get
    μ = 0 and var 1e-4 (×10). Reads: retain only (and which classes D_f empties, for that head rule).
    """

    reads = ("retain",)

    @classmethod
    def check_model(cls, model, num_classes, options):
        cls.check_head(model, num_classes)

    def __init__(self, model, alpha: float = 1e-6, **kwargs):
        super().__init__(model, **kwargs)
        self.alpha = float(alpha)

    def retain_fisher(self, data) -> dict[str, torch.Tensor]:
        """h of every trainable weight, in eval mode."""
        x, _ = data.tensors("retain")
        h = {k: torch.zeros_like(p) for k, p in self.model.named_parameters() if p.requires_grad}
        device = next(self.model.parameters()).device  # the trainer's (Unlearner.on_device)
        for chunk in x.split(self.batch_size):
            chunk = chunk.to(device)
            with torch.no_grad(), eval_mode(self.model):
                prob = self.counted(self.model, chunk).softmax(dim=1)  # a forward pass: FLOPs, no gradient
            for c in range(prob.shape[1]):
                grads = self.per_sample_grads(chunk, torch.full((len(chunk),), c, device=device))
                for k, g in grads.items():
                    h[k] += torch.einsum("n,n...->...", prob[:, c], g**2)
        return {k: v / len(x) for k, v in h.items()}

    @torch.no_grad()
    def edit(self, data):
        head = self.last_linear()
        head_params = {id(head.weight), id(head.bias)}
        forgotten = data.forgotten_classes()
        for name, h in self.retain_fisher(data).items():
            p = self.model.get_parameter(name)
            var = (1 / (h + 1e-8)).clamp(max=1e2 if id(p) in head_params else 1e3) * self.alpha
            if p.ndim > 1:
                var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
            mu = p.detach().clone()
            if id(p) in head_params and forgotten:
                mu[forgotten], var[forgotten] = 0.0, 1e-4
            if id(p) in head_params or p.ndim == 1:
                var *= 10
            p.copy_(mu + var.sqrt() * torch.randn_like(p))
