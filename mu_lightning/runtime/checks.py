"""Every check that runs before any training, called from here: a bad config or input fails early, with a message
that names the option, the bad value and what is allowed.

The pipeline calls ``check_config`` first (the config alone: targets, recipe numbers, metric tier, objective,
threads, DDP strategy, run directory), then builds the data (``check_poison`` on the training-set manipulation
first; forget selectors and the datamodule check their own arguments as they are made) and calls ``check_data``
(data, forget requests, unlearner and model agree; the stage cache's directory). A check that belongs to another
module lives there and is called from here.
"""

from __future__ import annotations

import inspect
import math

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from mu_lightning.callbacks.configured import check as check_callbacks
from mu_lightning.data import UnlearningDataModule
from mu_lightning.data.forget import by_class
from mu_lightning.errors import ConfigError
from mu_lightning.files import check_writable
from mu_lightning.metrics import check_config as check_metric_config
from mu_lightning.runtime.distributed import SINGLE, check_strategy
from mu_lightning.runtime.options import check_options
from mu_lightning.runtime.targets import check_targets
from mu_lightning.runtime.threads import check_threads
from mu_lightning.tuning.objective import check_objective
from mu_lightning.unlearners import Unlearner
from mu_lightning.weights import load_weights

# Options that are not a method's (a method's own options are checked by their ``__init__`` annotations:
# ``Unlearner.check_option_values``): positive, non-negative, integers, and numbers at all. Every number anywhere in
# the config must be finite.
POSITIVE = {"lr", "batch_size", "checkpoint_every", "every_n_steps"}
NON_NEGATIVE = {"epochs", "weight_decay", "momentum", "grad_clip"}
INTEGER = {"epochs", "batch_size", "every_n_steps", "seeds", "count", "padding", "num_entities", "max_epochs",
           "n_trials", "n_jobs", "checkpoint_every"}
NUMBER = POSITIVE | NON_NEGATIVE | INTEGER | {"fraction", "test_fraction", "val_fraction"}
CHECKPOINTS = ("original", "gold", "unlearned")  # <name>.checkpoint: a model made elsewhere
MAX_SEED = 2**32 - 1  # what torch and numpy generators accept
PIPELINE_SETS = ("max_epochs", "logger", "callbacks", "default_root_dir")  # Trainer arguments the pipeline passes
# Trainer arguments that manual optimization (every stage steps its own optimizer) refuses inside fit: key -> the
# value that is harmless
MANUAL_STEP = {"gradient_clip_val": None, "gradient_clip_algorithm": None, "accumulate_grad_batches": 1}


def check_config(cfg: DictConfig) -> None:
    """The config alone, before any rank starts or any data is loaded: targets, recipe numbers, the metric tier, the
    sweep objective, ``threads``, the DDP strategy, the callbacks group and the run directory."""
    check_targets(cfg)  # what each _target_ resolves to, and no switched-off safety (targets.py)
    check_options(cfg)  # no misspelt or unread key, no group switched off (options.py)
    _check_node(cfg, "")
    check_budget(cfg)
    _check_method(cfg)
    check_callbacks(cfg)  # the callbacks group: targets, the stages they name, the keys they monitor
    check_trainer(cfg)
    check_metric_config(cfg.metric)
    check_objective(cfg)
    check_threads(cfg)
    check_strategy(cfg)
    check_writable(cfg.paths.output_dir, "paths.output_dir", "choose another run directory with hydra.run.dir=...")


def check_budget(cfg: DictConfig) -> None:
    """``budget.flops``: null, or a number > 0, the fraction of the gold model's training FLOPs the unlearning stage
    may spend (docs/metrics.md §5). It needs a gold model whose FLOPs were counted, an unlearner that runs, and one
    process (under DDP each rank steps on its shard and the stage's FLOPs are only summed when its fit ends)."""
    value = OmegaConf.select(cfg, "budget.flops")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"budget.flops={value!r} is not allowed: it takes a number > 0 (a fraction of the gold "
                          "model's training FLOPs, e.g. 0.1) or null (no budget)")
    for name, why in (("gold", "records no training FLOPs to take a fraction of"), ("unlearned", "runs no unlearner")):
        if OmegaConf.select(cfg, f"{name}.checkpoint"):
            raise ConfigError(f"budget.flops={value} with {name}.checkpoint: a model made elsewhere {why}; drop one")
    if cfg.trainer.get("strategy", "auto") not in SINGLE:
        raise ConfigError(f"budget.flops={value} needs one process, not trainer.strategy="
                          f"{cfg.trainer.strategy}: under DDP the stage's FLOPs are summed only when its fit ends")


def _check_method(cfg: DictConfig) -> None:
    """``unlearner._target_`` is an Unlearner; its options are among the method's and of their annotated types."""
    unlearner = get_class(cfg.unlearner._target_)
    if not (isinstance(unlearner, type) and issubclass(unlearner, Unlearner)):
        raise ConfigError(f"unlearner._target_={cfg.unlearner._target_} is not an Unlearner subclass")
    options = {k: v for k, v in OmegaConf.to_container(cfg.unlearner, resolve=True).items() if not k.startswith("_")}
    unlearner.check_options(options)
    unlearner.check_option_values(options)


def check_numbers(node, path: str) -> None:
    """The numeric checks of the command line on a part of a config (the Python API's unlearner options)."""
    _check_node(node, path)


def _check_node(node, path: str) -> None:
    """Every option below ``node`` (not ``hydra.*``): numbers finite, of the right kind and in range."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            where = f"{path}.{key}" if path else str(key)
            if key == "hydra":
                continue
            value = _plain_value(node, key)
            if isinstance(value, DictConfig | ListConfig) and key not in NUMBER and not str(key).endswith("seed"):
                _check_node(value, where)
            else:
                _check_number(str(key), where, value)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            value = _plain_value(node, i)
            if isinstance(value, DictConfig | ListConfig):
                _check_node(value, f"{path}[{i}]")
            else:
                _check_number("", f"{path}[{i}]", value)


def _plain_value(node, key):
    """The option's value, interpolations resolved where they can be (``${hydra:...}`` cannot be in tests)."""
    try:
        return node[key]
    except Exception:  # noqa: BLE001 - an interpolation only Hydra's runtime can resolve: not a number
        return None


def _check_number(key: str, where: str, value) -> None:
    """One leaf: finite if a number; a number (or null) where ``NUMBER`` or a seed wants one; its range."""
    is_seed = key == "seed" or key.endswith("_seed")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and not math.isfinite(value):
        raise ConfigError(f"{where}={value} is not a finite number")
    if value is None or not (key in NUMBER or is_seed):
        return
    if not is_number:
        raise ConfigError(f"{where}={value!r} is not a number: {where} takes {_kind(key, is_seed)}")
    if (key in INTEGER or is_seed) and not isinstance(value, int):
        raise ConfigError(f"{where}={value} is not allowed: {where} takes {_kind(key, is_seed)}")
    if is_seed and not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{where}={value} is out of range: seeds are integers from 0 to {MAX_SEED}")
    if key in POSITIVE and value <= 0:
        raise ConfigError(f"{where}={value} must be > 0")
    if key in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{where}={value} must be >= 0")


def _kind(key: str, is_seed: bool) -> str:
    return "a seed (an integer >= 0)" if is_seed else "an integer" if key in INTEGER else "a number"


def check_trainer(cfg: DictConfig) -> None:
    """``cfg.trainer`` holds only Lightning ``Trainer`` arguments the pipeline does not set itself, and a GPU
    accelerator only where torch sees a GPU."""
    import lightning as L

    allowed = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", *PIPELINE_SETS}
    for key in cfg.trainer:
        if key in PIPELINE_SETS:
            raise ConfigError(f"trainer.{key} is set by the pipeline for each stage: set train.epochs / "
                              "unlearner.epochs, logger=..., callbacks.<name>=... or hydra.run.dir=... instead")
        if key not in allowed:
            raise ConfigError(f"trainer.{key} is not an argument of Lightning's Trainer (see "
                              "https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-flags)")
        if key in MANUAL_STEP and cfg.trainer[key] != MANUAL_STEP[key]:
            raise ConfigError(f"trainer.{key}={cfg.trainer[key]} cannot be used: every stage steps its optimizer "
                              "itself, which Lightning's clipping and accumulation do not support; set "
                              "train.grad_clip and unlearner.grad_clip to clip")
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but torch sees no GPU here "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}): use trainer=cpu "
                          "or trainer=ddp_cpu")
    if cfg.trainer.get("strategy", "auto") in SINGLE:  # DDP strategies are checked by check_strategy
        try:
            L.Trainer(**{**OmegaConf.to_container(cfg.trainer, resolve=True), "enable_progress_bar": False},
                      logger=False)
        except Exception as err:  # noqa: BLE001 - Lightning refuses bad values with several error types
            raise ConfigError(f"Lightning's Trainer refuses the trainer settings: {str(err).splitlines()[0]}") from None


def check_data(cfg: DictConfig, data: UnlearningDataModule) -> None:
    """The dataset config, the loaded data, the forget requests, the unlearner and the model agree; the stage cache
    (``cache=true``) can write its directory."""
    _check_samples(cfg, data)
    _check_test_split(cfg, data)
    _check_requests(cfg, data)
    model = instantiate(cfg.model)  # once: a checkpoint directory (model=hf) is read each time a model is built
    _check_model(cfg, model, data.samples.x)
    _check_model_fits_method(cfg, model)
    _check_checkpoints(cfg, data, model)  # last: it loads the given weights into ``model``
    if cfg.cache:
        check_writable(cfg.paths.cache_dir, "paths.cache_dir", "choose another directory or run with cache=false")


def _check_model_fits_method(cfg: DictConfig, model: torch.nn.Module) -> None:
    """What the unlearner reads of the model, as the method declares it (``Unlearner.check_model``)."""
    method = get_class(cfg.unlearner._target_)
    options = OmegaConf.to_container(cfg.unlearner, resolve=True)
    method.check_model(model, int(cfg.dataset.num_classes), options)


def _check_checkpoints(cfg: DictConfig, data: UnlearningDataModule, model: torch.nn.Module) -> None:
    """Each ``<model>.checkpoint`` fits the configured model (names and shapes); a model made elsewhere serves one
    forget request, and an unlearned one cannot give the ``seeds`` tier its other unlearning seeds nor the
    ``ensemble`` tier its unlearned members."""
    given = {name: OmegaConf.select(cfg, f"{name}.checkpoint") for name in CHECKPOINTS}
    for name in ("gold", "unlearned"):
        if given[name] and len(data.requests) > 1:
            raise ConfigError(f"{name}.checkpoint={given[name]} is one model, but forget=sequential makes "
                              f"{len(data.requests)} requests, each with its own {name} model: give one request")
    if given["unlearned"] and cfg.metric.tier == "seeds":
        raise ConfigError(f"unlearned.checkpoint={given['unlearned']} with metric=seeds: that tier runs the "
                          "unlearner with more seeds, which a model made elsewhere has not; use metric=full or fast")
    if given["unlearned"] and cfg.metric.tier == "ensemble":
        raise ConfigError(f"unlearned.checkpoint={given['unlearned']} with metric=ensemble: that tier unlearns N "
                          "originals and N shadow models with the configured unlearner, which did not make this "
                          "model; use metric=full or fast for a model made elsewhere")
    for name, path in given.items():
        if path:
            load_weights(model, path, f"{name}.checkpoint")


def check_poison(cfg: DictConfig, poison) -> None:
    """A training-set manipulation (``poison=...``, already built, so its own settings are checked) fits the
    dataset's ``num_classes`` and image size, before any data loads; None (no ``poison`` group) fits anything."""
    if poison is not None:
        poison.check_fits(int(cfg.dataset.num_classes), tuple(cfg.dataset.input_shape)[-2:])


def _check_samples(cfg: DictConfig, data: UnlearningDataModule) -> None:
    x = data.samples.x
    if list(x.shape[1:]) != list(cfg.dataset.input_shape):
        raise ConfigError(f"dataset.input_shape={list(cfg.dataset.input_shape)} but the data's samples have shape "
                          f"{list(x.shape[1:])}")
    if data.num_classes > cfg.dataset.num_classes:
        raise ConfigError(f"dataset.num_classes={cfg.dataset.num_classes} but the labels go up to "
                          f"{data.num_classes - 1}")


def _check_test_split(cfg: DictConfig, data: UnlearningDataModule) -> None:
    """Every model is evaluated on the test split: it must hold samples (``val`` may be empty)."""
    if len(data.ids["test"]) == 0:
        where = ("the dataset's own test split (split == 1) is empty" if data.samples.split is not None else
                 f"dataset.test_fraction={cfg.dataset.test_fraction} gives it 0 of {len(data.samples.y)} samples")
        raise ConfigError(f"the test split is empty: {where}; the models could not be evaluated. Use a "
                          "dataset.test_fraction that gives at least one sample")


def _check_requests(cfg: DictConfig, data: UnlearningDataModule) -> None:
    unlearner = get_class(cfg.unlearner._target_)
    y = data.samples.y
    for k, selector in enumerate(data.selectors):
        view = data.request(k)
        which = f"forget request {k + 1} of {len(data.selectors)}" if len(data.selectors) > 1 else "the forget request"
        lost = sorted(set(y[view.ids["forget"]].tolist()) - set(y[view.ids["retain"]].tolist()))
        if lost and getattr(selector, "func", selector) is not by_class:
            raise ConfigError(f"{which} removes every training sample of class(es) {lost}: the gold model could "
                              "never learn them; to forget whole classes use forget=class forget.classes=[...]")
        unlearner.check_request(view)


def _check_model(cfg: DictConfig, model: torch.nn.Module, x: torch.Tensor) -> None:
    if x.dtype == torch.int64 and x.dim() == 3:  # question-answer tokens for a causal LM (data/qa.py)
        return _check_language_model(cfg, model, x)
    try:
        with torch.no_grad():
            out = model.eval()(x[:2])
    except RuntimeError as err:
        raise ConfigError(f"model={cfg.model._target_.rsplit('.', 1)[-1]} does not fit inputs of shape "
                          f"{list(x.shape[1:])}: {err}") from None
    if out.shape[1:] != (cfg.dataset.num_classes,):
        raise ConfigError(f"the model outputs {list(out.shape[1:])} logits per sample, expected "
                          f"[{cfg.dataset.num_classes}] (dataset.num_classes)")


def _check_language_model(cfg: DictConfig, model: torch.nn.Module, x: torch.Tensor) -> None:
    """A causal LM on question-answer data: next-token logits ``[seq_len, vocab_size]`` per sequence, and an
    unlearner that reads text (``reads_text``) or none at all (``unlearner=none``)."""
    method = get_class(cfg.unlearner._target_)
    if method.reads and not getattr(method, "reads_text", False):
        raise ConfigError(f"unlearner={method.__name__} unlearns classifiers; question-answer data takes the "
                          "language-model methods (unlearner=lm_*, docs/language-models.md)")
    vocab = int(getattr(model, "vocab_size", cfg.dataset.vocab_size))
    if int(x.max()) >= vocab:
        raise ConfigError(f"the data holds token id {int(x.max())}, beyond the model's {vocab} outputs: the data was "
                          "tokenized for another model (dataset.source.tokenizer follows model.path for model=hf)")
    try:
        with torch.no_grad():
            out = model.eval()(x[:2, 0])
    except (RuntimeError, IndexError) as err:
        raise ConfigError(f"model={cfg.model._target_.rsplit('.', 1)[-1]} does not take token sequences of "
                          f"length {x.shape[-1]}: {err}") from None
    if tuple(out.shape[1:]) != (x.shape[-1], vocab):
        raise ConfigError(f"the model outputs {list(out.shape[1:])} per sequence, expected next-token logits "
                          f"[{x.shape[-1]}, {vocab}] (dataset.input_shape[1], dataset.vocab_size): use model=gpt "
                          "or model=hf")
