"""The base of every unlearning method: turns M into M_u from the sets it reads, never seeing the gold model.

Adding a method is its file here, its config and one test row: docs/methods.md, "Adding a method".
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from mu_lightning.data.batches import PairedBatches, TensorBatches
from mu_lightning.data.datamodule import UnlearningDataModule
from mu_lightning.errors import ConfigError
from mu_lightning.stages.base import Stage

log = logging.getLogger(__name__)
Batch = dict[str, tuple[torch.Tensor, torch.Tensor]]
LOSS_BLOWUP = (10.0, 50.0)  # a finite loss exploded: |loss| > max(10 × |first loss|, 50 nats) (docs/metrics.md §9)
TRAIN_MODES = ("train", "eval")  # the mode the model trains in (``train_mode``)
KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
SEARCH = "search"  # the config key that holds a method's search space (docs/methods.md, "Tuning on your data")


def _plain_types(annotation: Any) -> tuple[type, ...]:
    """The plain types an annotation allows (``float | None`` gives float and NoneType); () if it allows others."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (
        annotation,)
    plain = tuple(a for a in args if a in (int, float, bool, str, type(None)))
    return plain if len(plain) == len(args) else ()


def _is_of(value: Any, kind: type) -> bool:
    """YAML's view: a float option takes an integer too; a bool is no number and a number no bool."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


@dataclass(frozen=True)
class Pass:
    """One pass of an epoch: a step on each batch of the set ``over`` in turn, each step also given the next batch
    of every set in ``alongside`` (cycled: reshuffled and restarted when it runs out).

    ``Pass("retain", alongside=("forget",))`` is NegGrad+'s epoch, one pass over D_r with D_f alongside;
    ``(Pass("forget"), Pass("retain"))`` is RL's, a D_f pass then a D_r pass. Anchoring matters: with a retain set
    9x the forget set, a pass over the forget set runs 9x fewer steps than one over the retain set.
    """

    over: str
    alongside: tuple[str, ...] = ()


class EpochBatches:
    """The training loader of an unlearner: epoch ``epoch()`` yields the batches of ``passes(epoch())`` in order.

    ``len`` is the longest epoch over ``epochs`` (Lightning reads it once; a shorter epoch ends when its iterator
    does); ``total`` counts the batches of all epochs.
    """

    def __init__(self, sets: dict[str, TensorBatches], passes: Callable[[int], tuple[Pass, ...]], epochs: int,
                 epoch: Callable[[], int]):
        self.sets, self.passes, self.epoch, self.epochs = sets, passes, epoch, max(int(epochs), 1)
        for e in range(self.epochs):
            for named in passes(e):
                missing = [n for n in (named.over, *named.alongside) if n not in sets]
                if missing:
                    raise ValueError(f"passes({e}) names {missing}, which are not among the sets {sorted(sets)}")

    def epoch_length(self, epoch: int) -> int:
        return sum(len(self.sets[named.over]) for named in self.passes(epoch))

    @property
    def total(self) -> int:
        return sum(self.epoch_length(e) for e in range(self.epochs))

    def __len__(self) -> int:
        return max(self.epoch_length(e) for e in range(self.epochs))

    def __iter__(self) -> Iterator[Batch]:
        for named in self.passes(self.epoch()):
            yield from PairedBatches({n: self.sets[n] for n in (named.over, *named.alongside)}, anchor=named.over)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block, and back in the mode it was in (train or eval) after it."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def freeze(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with no gradients, in place: a fixed reference network."""
    return module.eval().requires_grad_(False)


def reinitialise(module: nn.Module) -> nn.Module:
    """Draw fresh weights for every layer of ``module`` that knows how (``reset_parameters``), in place.

    Bad Teacher's incompetent teacher and EU-k's re-initialised blocks both need a random init of a given shape.
    """
    for layer in module.modules():
        if callable(getattr(layer, "reset_parameters", None)):
            layer.reset_parameters()
    return module


class _Method(type(Stage)):
    """Calls a method's class without ``search``: that key of ``conf/unlearner/<name>.yaml`` is the method's search
    space for ``hparams_search`` (``mu_lightning.tuning.search``), not an option, so a config instantiates as it is."""

    def __call__(cls, *args, **kwargs):
        kwargs.pop(SEARCH, None)
        return super().__call__(*args, **kwargs)


class Unlearner(Stage, metaclass=_Method):
    """Base class of every unlearning method (``conf/unlearner/<name>.yaml`` names a subclass); docs/methods.md,
    "Adding a method", has the steps to add one.

    ``unlearn`` runs ``edit(data)`` and then ``epochs`` epochs of training, each made of ``passes(epoch)`` over
    ``sets(data, seed)`` with one optimizer step on ``loss(batch)`` per batch. ``model`` already holds M's weights
    when the method receives it; ``frozen_original`` is a frozen copy of M for methods that set
    ``needs_frozen_original``. The config options of a method are the keyword parameters of its ``__init__``
    (``options()``); ``self.data`` is the datamodule being served, for a method's own use during training.
    """

    reads: ClassVar[tuple[str, ...]] = ("forget", "retain")
    needs_frozen_original: ClassVar[bool] = False
    needs_initial_weights = False  # True: the pipeline sets ``initial_weights``, M's initialisation (EU-k)

    def __new__(cls, *args, **kwargs):
        cls.check_options(kwargs.keys() - {"model"})  # here, before any __init__ of the chain sees them
        return super().__new__(cls)

    def __init__(self, model: nn.Module, epochs: int = 1, batch_size: int = 64,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
                 grad_clip: float | None = None, augment: bool = True, train_mode: str = "train"):
        if epochs > 0 and optimizer is None:
            raise ValueError(f"{type(self).__name__} trains for {epochs} epochs and needs an optimizer")
        if train_mode not in TRAIN_MODES:
            raise ConfigError(f"unlearner.train_mode={train_mode!r} is not one of {', '.join(TRAIN_MODES)}")
        super().__init__(model, epochs, batch_size, optimizer, scheduler, grad_clip)
        # augment: the dataset's augmentation on the reads splits' batches; train_mode "eval": the model trains with
        # BatchNorm on its running statistics and dropout off (the SCRUB notebook's NegGrad+, CF-k, EU-k)
        self.augment, self.train_mode = bool(augment), train_mode
        # kept out of the module tree: not trained, not saved, not counted as the model's parameters
        self._frozen = [freeze(copy.deepcopy(model))] if self.needs_frozen_original else []
        self.warnings: list[str] = []  # what went wrong without failing: results.json ``warnings`` (pipeline.py)
        self._loss_range: tuple[float, float] | None = None  # |loss| of the first step and the largest since

    @classmethod
    def options(cls) -> list[str]:
        """The config keys the method takes: the keyword parameters of its ``__init__``, and of each base's
        ``__init__`` that the one below passes ``**kwargs`` on to."""
        names: list[str] = []
        for init in cls._option_inits():
            params = list(inspect.signature(init).parameters.values())[1:]  # after self
            names += [p.name for p in params if p.name != "model" and p.name not in names
                      and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        return names

    @classmethod
    def _option_inits(cls) -> Iterator[Callable]:
        """The ``__init__`` of the method and of each base (or mixin) it passes ``**kwargs`` on to, nearest first."""
        for klass in cls.__mro__:
            init = vars(klass).get("__init__")
            if init is not None:
                yield init
                if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
                    return

    @classmethod
    def check_options(cls, keys) -> None:
        """Raise ConfigError naming the keys that are not among the method's ``options()``."""
        unknown = sorted(set(keys) - set(cls.options()) - {SEARCH})
        if unknown:
            listed = ", ".join(f"unlearner.{k}" for k in unknown)
            raise ConfigError(f"{listed} {'is not an option' if len(unknown) == 1 else 'are not options'} of "
                              f"{cls.__name__} (its options: {', '.join(cls.options()) or 'none'})")

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Each option's annotation from the ``__init__`` that declares it (``int``, ``float | None``, ...)."""
        found: dict[str, Any] = {}
        for init in cls._option_inits():  # the nearest declaration of an option wins
            found.update({k: v for k, v in typing.get_type_hints(init).items() if k not in found})
        return {k: v for k, v in found.items() if k in cls.options()}

    @classmethod
    def check_option_values(cls, values: dict[str, Any]) -> None:
        """Raise ConfigError for an option whose value is not of its annotated type: an ``int`` option given 1.5 (or
        True), a ``float`` option given text, a ``bool`` option given a number. Unannotated options are not checked."""
        types = cls.option_types()
        for key, value in values.items():
            allowed = _plain_types(types.get(key))
            if allowed and not any(_is_of(value, kind) for kind in allowed):
                names = " or ".join("null" if kind is type(None) else KIND_NAMES.get(kind, kind.__name__)
                                    for kind in allowed)
                raise ConfigError(f"unlearner.{key}={value!r} is not allowed: {cls.__name__}'s {key} takes {names}")

    @classmethod
    def check_model(cls, model: nn.Module, num_classes: int, options: dict[str, Any]) -> None:
        """Raise ConfigError if the method cannot work on ``model`` (a network for ``num_classes`` classes) with
        ``options``; called before any training. A method that reads part of the model (its head, its blocks)
        says so here; the default accepts any model."""

    @property
    def frozen_original(self) -> nn.Module:
        """M as the method received it, in eval mode and without gradients."""
        if not self._frozen:  # not AttributeError: nn.Module.__getattr__ would replace the message with its own
            raise TypeError(f"{type(self).__name__} does not set needs_frozen_original = True")
        return self._frozen[0]

    def on_fit_start(self) -> None:
        for module in self._frozen:
            module.to(self.device)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.train_mode == "eval":  # after Lightning's own .train() at the start of the fit
            self.model.eval()

    def run(self, data: UnlearningDataModule, make_trainer: Callable[[int], L.Trainer], seed: int,
            monitors: Iterable = (), flop_limit: int | None = None) -> tuple[dict[str, Any], float]:
        """``unlearn`` timed: the facts results.json records for the stage, and its seconds: the method's own
        (``Stage.clock``), without the Trainer, loggers, FLOP counting or the ``monitors``' time (``StageMonitor``
        callbacks: ``overhead_seconds``, ``monitoring_seconds``); ``flop_limit``: no step past it (``Stage``)."""
        monitors, self.flop_limit = list(monitors), flop_limit
        self.clock.exclude(monitors)  # trajectory logging is not unlearning work
        t0 = time.perf_counter()
        self.unlearn(data, make_trainer, seed=seed)
        monitoring, seconds = sum(m.seconds for m in monitors), self.clock.seconds
        facts = {"method": type(self).__name__, "reads": list(self.reads), "seed": seed,
                 "monitoring_seconds": monitoring, "overhead_seconds": time.perf_counter() - t0 - seconds - monitoring,
                 **self.cost(), "steps": self.steps_taken, "diverged": self.diverged,
                 "diverged_step": self.diverged_step}
        if self.diverged:
            log.warning("unlearn   diverged at step %d (a non-finite loss or output); reporting the last finite "
                        "weights", self.diverged_step)
        log.info("%-8s %s (seed %d): %d steps in %.2f s", "unlearn", facts["method"], seed, self.steps_taken, seconds)
        return facts, seconds

    def unlearn(self, data: UnlearningDataModule, make_trainer: Callable[[int], L.Trainer], seed: int) -> None:
        """Run the method: the one-shot ``edit`` first, then ``epochs`` epochs of ``passes`` over ``sets``.

        ``planned_steps`` is then the number of optimizer steps the epochs hold (SalUn-soft's schedule length).
        """
        self.check_request(data)
        self.data, self.warnings, self._loss_range = data, [], None
        trainer = make_trainer(self.epochs)
        # one-shot work where the trainer trains (a GPU), on the method's clock
        with self.on_device(trainer.strategy.root_device), self.clock.running():
            self.edit(data)
        if self.epochs > 0:
            with self.clock.running():  # the method's own sets are its work; the fit times itself (Stage.clock)
                sets = self.sets(data, seed)
            batches = EpochBatches(sets, self.passes, self.epochs, epoch=lambda: self.current_epoch)
            self.planned_steps = batches.total
            trainer.fit(self, train_dataloaders=self.chunks(batches))
            self.check_loss()

    @contextmanager
    def on_device(self, device: torch.device) -> Iterator[None]:
        """The method (``model`` and its own modules) and the frozen copy of M on ``device`` inside the block, back
        where the model was after it; an ``edit`` puts its batches on ``next(self.model.parameters()).device``."""
        before = next(self.model.parameters()).device
        for module in (self, *self._frozen):
            module.to(device)
        try:
            yield
        finally:
            for module in (self, *self._frozen):
                module.to(before)

    def check_loss(self) -> None:
        """Add a warning when a finite loss exploded (``LOSS_BLOWUP``): training went wrong without diverging."""
        if self._loss_range is None:
            return
        first, peak = self._loss_range
        if peak > max(LOSS_BLOWUP[0] * first, LOSS_BLOWUP[1]):
            self.warnings.append(f"{type(self).__name__}'s loss exploded without becoming non-finite: |loss| "
                                 f"reached {peak:.4g} from {first:.4g} at the first step (threshold: "
                                 f"max({LOSS_BLOWUP[0]:g} × first, {LOSS_BLOWUP[1]:g} nats)); lower the learning rate")

    @classmethod
    def check_request(cls, data: UnlearningDataModule) -> None:
        """Raise ConfigError if the method cannot serve this forget request; called before any training."""

    def edit(self, data: UnlearningDataModule) -> None:
        """One-shot weight edit before any training loop; the default does nothing."""

    def sets(self, data: UnlearningDataModule, seed: int) -> dict[str, TensorBatches]:
        """The named sets the passes go over: by default each split of ``reads``, shuffled with seed ``seed + i``
        for the i-th, in batches of ``batch_size(name)``, augmented unless ``augment`` is off."""
        return {name: data.batches(name, self.set_batch_size(name), shuffle=True, seed=seed + i, augment=self.augment)
                for i, name in enumerate(self.reads)}

    def set_batch_size(self, name: str) -> int:
        """The batch size of set ``name``: ``batch_size`` unless a method sets one per set (SCRUB)."""
        return self.batch_size

    def passes(self, epoch: int) -> tuple[Pass, ...]:
        """What epoch ``epoch`` (from 0) passes over, in order: every training method says."""
        raise NotImplementedError(f"{type(self).__name__} trains for {self.epochs} epochs but defines no passes()")

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} trains for {self.epochs} epochs but defines no loss()")

    def train_step(self, batch: Batch) -> None:
        loss = self.loss(batch)
        value = abs(float(loss.detach()))  # Stage.step reads the value anyway: no extra device sync
        if math.isfinite(value):
            first, peak = self._loss_range or (value, value)
            self._loss_range = (first, max(peak, value))
        self.step(loss)

    def counted(self, fn: Callable, *args, samples: int = 0):
        """``fn(*args)``, one of the method's passes besides its optimizer steps (per-sample gradients, importances,
        a saliency mask, a noise step), added to the stage's cost: its FLOPs and ``samples`` gradient evaluations
        (samples whose loss it differentiates; 0 for a forward pass). ``fn`` must act only through its result:
        the FLOPs of a new input shape are counted by running it once more, off the clock, with the model's buffers,
        gradients and random state restored (``mu_lightning.stages.flops``)."""
        self.tally.record(fn, args, samples)
        with self.clock.paused():
            self.tally.count(self)
        return fn(*args)

    def last_linear(self) -> nn.Linear:
        """The model's classifier head: its last ``nn.Linear`` (Fisher's last-layer rule, Boundary Expand's head)."""
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(f"{type(self).__name__} needs a model whose classifier head is an nn.Linear")
        return linears[-1]

    @classmethod
    def check_head(cls, model: nn.Module, num_classes: int) -> None:
        """``check_model`` of a method that reads the classifier head (``last_linear``): the model's last
        ``nn.Linear`` must exist and have ``num_classes`` outputs (docs/checkpoints.md, "Your own architecture")."""
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears or linears[-1].out_features != num_classes:
            found = f"its last nn.Linear has {linears[-1].out_features} outputs" if linears else "it has no nn.Linear"
            raise ConfigError(f"unlearner={cls.__name__} reads the classifier head, the model's last nn.Linear with "
                              f"dataset.num_classes={num_classes} outputs, but in model={type(model).__name__} "
                              f"{found}")

    def per_sample_grads(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: [n, *shape]}``: the gradient of CE(f(x_i), y_i) for each sample, in eval mode (torch.func vmap).

        One vectorised call instead of n backward passes: Fisher forgetting and IU need per-sample gradients. Part
        of the stage's cost (``counted``): ``len(x)`` gradient evaluations.
        """
        return self.counted(self._per_sample_grads, x, y, samples=len(x))

    def _per_sample_grads(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        params = {k: p.detach() for k, p in self.model.named_parameters() if p.requires_grad}
        buffers = dict(self.model.named_buffers())

        def sample_loss(p, xi, yi):
            return F.cross_entropy(functional_call(self.model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

        with eval_mode(self.model):
            return vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)


class OneShotUnlearner(Unlearner):
    """A method that edits M's weights once, in ``edit(data)``, with no training loop (Fisher, IU, SSD).

    Its options are its own keyword parameters and ``batch_size`` (samples per gradient computation: memory, not
    the result); it takes no ``epochs`` and no optimizer.
    """

    def __init__(self, model: nn.Module, batch_size: int = 64):
        super().__init__(model, epochs=0, batch_size=batch_size)

    def edit(self, data: UnlearningDataModule) -> None:
        raise NotImplementedError(f"{type(self).__name__} is a one-shot method but defines no edit()")
