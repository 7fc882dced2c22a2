"""What a stage costs in units that do not depend on the machine, and the machine its seconds were measured on.

FLOPs come from torch's own counter, ``torch.utils.flop_counter.FlopCounterMode`` (its total:
``TotalFlopCounter``). It counts the operations that have a FLOP formula in torch (matrix products and convolutions,
forward and backward, and attention); element-wise work, normalisation, softmax, losses and optimizer updates count
0. A backward pass computes the gradients autograd needs and no more: an input that needs no gradient (a first
layer's data) gets none, so forward + backward of an MLP is less than 3× its forward.

The counter makes the pass it watches about ten times slower, so no stage runs under it. A ``PassTally`` records how
many times each pass ran on inputs of each shape (a pass: one optimizer step, or one of a method's extra gradient
passes); the FLOPs of a pass are counted once per shape, by running it once more under the counter with its side
effects undone, and multiplied by that number. The count is deterministic: the same shapes give the same number on
any machine.

Gradient evaluations: each pass that differentiates a loss adds the number of samples whose loss it differentiates
(a step on a batch of 64: 64; per-sample gradients of 64 samples for 10 labels: 640).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter


def signature(value: Any) -> Any:
    """What the FLOPs of a pass over ``value`` depend on: the shapes of its tensors, its dict keys, its structure."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, dict):
        return tuple((k, signature(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return tuple(signature(v) for v in value)
    return None


def leading_samples(value: Any) -> int:
    """Samples of a batch: the first dimension of its first tensor, summed over the sets of a ``{set: (x, y)}``."""
    if isinstance(value, dict):
        return sum(leading_samples(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return leading_samples(value[0]) if value else 0
    return len(value) if isinstance(value, torch.Tensor) and value.dim() else 0


@dataclass
class Run:
    """One pass on inputs of one shape: how often it ran, its samples, its FLOPs once counted, and an example."""

    times: int
    samples: int
    flops: int | None
    example: tuple[Callable, tuple] | None


class PassTally:
    """The passes a stage made, per (pass, input shapes), and their FLOPs and gradient evaluations.

    ``record`` is called for every pass (cheap: a shape lookup); ``count`` runs one uncounted example of each shape
    under the counter, with ``module``'s buffers, its gradients and the random state restored afterwards, and drops
    the examples. ``flops`` and ``grad_evals`` are the totals over every recorded pass.
    """

    def __init__(self) -> None:
        self.runs: dict[tuple, Run] = {}
        self.summed: tuple[int, int] | None = None  # (flops, grad_evals) summed over DDP ranks, once a fit ends

    def record(self, fn: Callable, args: tuple, samples: int | None = None) -> None:
        """Note one pass ``fn(*args)``; ``samples`` (default: the batch's ``leading_samples``) gradient evaluations."""
        key = (getattr(fn, "__qualname__", None) or type(fn).__qualname__, signature(args))  # a module: its class
        found = self.runs.get(key)
        if found is None:
            self.runs[key] = Run(1, leading_samples(args) if samples is None else samples, None, (fn, args))
        else:
            found.times += 1

    def count(self, module: nn.Module) -> None:
        """Count the FLOPs of every shape not yet counted, by one side-effect-free run of its example."""
        for run in self.runs.values():
            if run.example is not None:
                fn, args = run.example
                run.flops, run.example = flops_of(module, fn, *args), None

    @property
    def flops(self) -> int:
        if self.summed is not None:
            return self.summed[0]
        uncounted = [key[0] for key, run in self.runs.items() if run.flops is None]
        if uncounted:
            raise RuntimeError(f"passes {sorted(set(uncounted))} were recorded but never counted (PassTally.count)")
        return sum(run.times * run.flops for run in self.runs.values())

    @property
    def grad_evals(self) -> int:
        if self.summed is not None:
            return self.summed[1]
        return sum(run.times * run.samples for run in self.runs.values())


def flops_of(module: nn.Module, fn: Callable, *args) -> int:
    """FLOPs of ``fn(*args)``, run once under ``FlopCounterMode`` with its effects on ``module`` undone."""
    with side_effects_undone(module), TotalFlopCounter(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


class TotalFlopCounter(flop_counter.FlopCounterMode):
    """``FlopCounterMode`` counting the total only, without its per-module breakdown: the breakdown's module hooks
    fail when a pass differentiates with respect to a module's leaf input (``autograd.grad`` on UNSIR's noise or
    Boundary Shrink's adversarial input: "A leaf node was passed to _will_engine_execute_node"). Every count goes to
    the ``Global`` entry, as FlopCounterMode's own total does."""

    def __enter__(self):
        self.flop_counts.clear()
        self.mode = flop_counter._FlopCounterMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        done, self.mode = self.mode.__exit__(*args), None
        return done


@contextmanager
def side_effects_undone(module: nn.Module) -> Iterator[None]:
    """Inside, passes over ``module`` may move its buffers (BatchNorm statistics), set gradients and draw random
    numbers: all three are as they were afterwards. Parameters are not saved: a counted pass must not step."""
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    grads = [(p, p.grad) for p in module.parameters()]
    for p, _ in grads:
        p.grad = None
    cuda = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in grads:
            p.grad = g


def hardware(device: torch.device | str, precision: str) -> dict[str, Any]:
    """The conditions a time was measured under: device, CPU model and count, torch threads and precision."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": name, "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "precision": str(precision)}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
