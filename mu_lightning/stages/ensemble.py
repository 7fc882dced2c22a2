"""Many members of one training recipe trained at once: stacked parameters and one vectorised step.

The members of an ensemble (gold seeds, shadow models on random halves of D) share the architecture, the recipe and
the size of the set each learns from; they differ by initialisation seed, batch order and, for shadow models, which
samples they learn from. ``train_together`` stacks their parameters (``torch.func.stack_module_state``) and runs one
step for all of them: ``vmap`` over ``functional_call`` of the member's loss, the sum of the member losses
differentiated once (member k's parameters get the gradient of member k's loss alone), and the configured optimizer
stepping the stacked tensors. SGD, Adam and AdamW update each element from its own gradient and state, so an
optimizer over stacked tensors is N optimizers side by side; the per-epoch schedule multiplies every member's
learning rate alike, and gradient clipping is applied per member (its own norm, torch's formula).

Each member draws its initialisation from its seed and its batches from its own ``TensorBatches`` generator seeded
by it, exactly as a stage trained alone (``ClassifierModule``) does, so member k is that stage up to the summation
order of batched matrix products (float tolerance, not bit for bit: tests/test_ensemble.py).

The MLP and the CNN skip ``vmap`` for an equivalent batched formulation written by hand (``stacked_mlp``,
``stacked_cnn``: the CNN's members side by side along the channels, grouped convolutions, and batch norms whose
per-channel statistics are each member's own). What cannot run either way (``not_vectorisable`` says why): batch
norm in training mode elsewhere (its running statistics are written in place, which ``vmap`` refuses), dropout (a
vmapped draw is not the draw of a model alone), members whose sets differ in size (their steps would not line up),
optimizers that are not element-wise. Those members are trained one at a time by the caller's ordinary stage, with
the same results as a stage alone by construction.

FLOPs are counted per member (``stages/flops.py``): one member's step on each batch shape, on a model of its own,
times the steps of that shape; the same count as the member's stage alone.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from mu_lightning.stages.flops import PassTally, hardware

ELEMENTWISE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)  # one element's update reads its own state only


def not_vectorisable(model: nn.Module, optimizer: Callable | None = None) -> str | None:
    """Why ``model`` (with ``optimizer``, a params -> Optimizer factory) cannot be trained in a stack, or None."""
    batched_by_hand = stacked_cnn(model) is not None  # its batch norms are batched by channel, not by vmap
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats and not batched_by_hand:
            return f"{type(module).__name__} in training mode writes its running statistics in place"
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{type(module).__name__} draws per call: a vmapped draw is not a member's own"
    kind = getattr(optimizer, "func", optimizer)
    if optimizer is not None and not (isinstance(kind, type) and issubclass(kind, ELEMENTWISE)):
        return f"optimizer {getattr(kind, '__name__', kind)} is not known to be element-wise"
    return None


@dataclass
class Member:
    """One member: its initial network (drawn from its seed), the samples it learns from and its batch seed."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    seed: int


@dataclass
class Trained:
    """What ``train_together`` returns per member: the state dict and the facts a stage alone records."""

    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def member_losses(base: nn.Module) -> Callable:
    """``(params, buffers, x [N, B, ...], y [N, B]) -> [N]``: each member's mean cross-entropy on its own batch, its
    logits from its own parameters and buffers (``vmap`` over ``functional_call``)."""
    logits = stacked_mlp(base) or stacked_cnn(base) or vmap(
        lambda params, buffers, x: functional_call(base, (params, buffers), (x,)))

    def losses(params, buffers, x, y):
        z = logits(params, buffers, x)
        return F.cross_entropy(z.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)

    return losses


def stacked_mlp(base: nn.Module) -> Callable | None:
    """For a ``Sequential`` of ``Flatten``, ``Linear`` and ``ReLU`` (the MLP), the equivalent batched formulation
    without ``vmap``: ``baddbmm`` per linear layer, bias added by the same call; None for any other network. The same
    products as ``vmap`` over the layers, with about a fifth less overhead per step on the digits MLP."""
    if not isinstance(base, nn.Sequential) or not all(isinstance(m, (nn.Flatten, nn.Linear, nn.ReLU)) for m in base):
        return None
    if any(isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1) for m in base) \
            or any(isinstance(m, nn.Linear) and m.bias is None for m in base):
        return None
    names = [(name, type(m)) for name, m in base.named_children()]

    def logits(params, buffers, x):
        h = x
        for name, kind in names:
            if kind is nn.Flatten:
                h = h.flatten(2)
            elif kind is nn.ReLU:
                h = torch.relu(h)
            else:
                h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))
        return h

    return logits


CNN_PARTS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)


def stacked_cnn(base: nn.Module) -> Callable | None:
    """For a ``Sequential`` of convolutions, batch norms, ReLUs and poolings, then ``Flatten`` and one ``Linear`` (the
    CNN), the equivalent batched formulation: the N members side by side along the channels, each convolution one
    grouped convolution (``groups=N``: group k is member k's filters on member k's batch), each batch norm one batch
    norm over N·C channels, whose per-channel batch statistics and running averages are exactly member k's own;
    ``baddbmm`` for the head. None for any other network."""
    parts = list(base) if isinstance(base, nn.Sequential) else []
    if not parts or not all(isinstance(m, CNN_PARTS) for m in parts) or not isinstance(parts[-1], nn.Linear) \
            or sum(isinstance(m, (nn.Flatten, nn.Linear)) for m in parts) != 2 or not isinstance(parts[-2], nn.Flatten):
        return None
    if any(isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros") for m in parts) or \
            any(isinstance(m, nn.BatchNorm2d) and (m.momentum is None or not m.affine) for m in parts):
        return None
    names = [(name, m) for name, m in base.named_children()]

    def logits(params, buffers, x):
        n, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:])  # [B, N·C, H, W]: member k's channels k·C…
        for name, m in names:
            if isinstance(m, nn.Conv2d):
                w = params[f"{name}.weight"]
                bias = params[f"{name}.bias"].reshape(-1) if m.bias is not None else None
                h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), bias, m.stride, m.padding, m.dilation, groups=n)
            elif isinstance(m, nn.BatchNorm2d):
                mean, var = buffers[f"{name}.running_mean"], buffers[f"{name}.running_var"]
                h = F.batch_norm(h, mean.view(-1), var.view(-1), params[f"{name}.weight"].reshape(-1),
                                 params[f"{name}.bias"].reshape(-1), True, m.momentum, m.eps)  # updates mean, var
                buffers[f"{name}.num_batches_tracked"].add_(1)
            elif isinstance(m, nn.Flatten):
                h = h.flatten(1).view(b, n, -1).transpose(0, 1)  # [N, B, C]
            elif isinstance(m, nn.Linear):
                h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))
            else:
                h = m(h)  # ReLU and poolings act per channel
        return h

    return logits


def epoch_batches(members: list[Member], generators: list[torch.Generator], batch_size: int,
                  augment: Callable | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of every member's batches, stacked: ``(x [N, B, ...], y [N, B])`` per step.

    Member k's batches are exactly those of ``TensorBatches(x_k, y_k, batch_size, shuffle=True, seed=seed_k)``: one
    ``randperm`` per epoch from its generator, then (with ``augment``) one augmentation draw per batch from it."""
    orders = [torch.randperm(len(m.x), generator=g) for m, g in zip(members, generators, strict=True)]
    xs = torch.stack([m.x[o] for m, o in zip(members, orders, strict=True)])
    ys = torch.stack([m.y[o] for m, o in zip(members, orders, strict=True)])
    for start in range(0, xs.shape[1], batch_size):
        xb, yb = xs[:, start:start + batch_size], ys[:, start:start + batch_size]
        if augment is not None:
            xb = torch.stack([augment(xb[k], g) for k, g in enumerate(generators)])
        yield xb, yb


def clip_per_member(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale each member's gradients to norm at most ``max_norm``, as ``clip_grad_norm_`` does to a model alone."""
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # [N]
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def train_together(members: list[Member], epochs: int, batch_size: int, optimizer: Callable,
                   scheduler: Callable | None = None, grad_clip: float | None = None,
                   augment: Callable | None = None) -> list[Trained]:
    """Train every member for ``epochs`` in one stacked, vectorised loop; see the module doc.

    ``optimizer``: params -> Optimizer (the recipe's ``train.optimizer``), ``scheduler``: optimizer -> scheduler
    stepped once per epoch. A member whose loss turns non-finite stops the whole ensemble with a ValueError naming
    it (a stage alone stops and stores nothing in that case)."""
    sizes = {len(m.x) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"members learn from sets of different sizes {sorted(sizes)}: train them one at a time")
    base = copy.deepcopy(members[0].model).to("meta")
    params, buffers = stack_module_state([m.model for m in members])
    opt = optimizer(list(params.values()), foreach=True)  # the same element-wise update, one call per step
    sched = scheduler(opt) if scheduler is not None else None
    losses = member_losses(base)
    generators = [torch.Generator().manual_seed(int(m.seed)) for m in members]  # as TensorBatches seeds its own
    tally, one = PassTally(), copy.deepcopy(members[0].model)
    steps, t0 = 0, time.perf_counter()
    for _ in range(int(epochs)):
        for x, y in epoch_batches(members, generators, batch_size, augment):
            loss = losses(params, buffers, x, y)
            bad = (~torch.isfinite(loss)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(f"members {bad} diverged at step {steps + 1} (a non-finite loss)")
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            if grad_clip:
                clip_per_member([p.grad for p in params.values()], float(grad_clip))
            opt.step()
            tally.record(counted_step, (one, (x[0], y[0])), samples=y.shape[1])
            steps += 1
        if sched is not None:
            sched.step()
    seconds = time.perf_counter() - t0
    tally.count(one)
    cost = {"flops": tally.flops, "grad_evals": tally.grad_evals, "hardware": hardware("cpu", "32-true")}
    out = []
    for k in range(len(members)):
        state = {name: t[k].detach().clone() for name, t in {**params, **buffers}.items()}
        ordered = {name: state[name] for name in members[k].model.state_dict()}
        out.append(Trained(ordered, {"fit_seconds": seconds / len(members), "steps": steps,
                                     "samples": len(members[k].x), **cost,
                                     "ensemble": {"members": len(members), "wall_seconds": seconds}}))
    return out


def counted_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One member's counted work on ``batch``, on a model of its own: the loss and its backward (as a stage's)."""
    x, y = batch
    F.cross_entropy(model(x), y).backward()


def margins(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """φ = z_y − logsumexp_{j≠y} z_j of every model on every sample, ``[len(models), len(x)]`` (eval mode, float64):
    the margin of the Easy Data-Unlearning Bench (``unlearning_bench/eval.py``, ``get_margin``) and φ of §0."""
    rows = []
    for model in models:
        was = model.training
        model.eval()
        with torch.no_grad():
            z = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]).double()
        model.train(was)
        correct = z.gather(1, y.view(-1, 1)).squeeze(1)
        rows.append(correct - z.scatter(1, y.view(-1, 1), -math.inf).logsumexp(1))
    return torch.stack(rows)
