"""Forget requests: which training samples an entity asks to have forgotten.

Each selector takes the training-set sample ids and their labels and returns the sorted forget ids.
``conf/forget/<name>.yaml`` names one (``_partial_: true``); its other keys are the selector's options.
A selector that needs more than labels declares it as a keyword-only parameter, and the datamodule passes it for
the training samples: ``groups`` (``Samples.group``), ``fine_labels`` (``Samples.fine``), ``fine_names``.
``sequence`` turns a list of requests into one selector per request (``forget=sequential``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mu_lightning.configurable import configurable
from mu_lightning.errors import ConfigError

ID_LINE = re.compile(r"[0-9]{1,18}")  # one sample id: ASCII digits, small enough for int64


def how_many(n: int, fraction: float | None, count: int | None, unit: str) -> int:
    """How many of ``n`` items a request takes: ``count`` if given, else ``fraction`` of them (0 < k < n)."""
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < n:
            raise ConfigError(f"forget.count={count!r} is out of range: it must be an integer with 0 < count < {n} "
                              f"(the training set has {n} {unit})")
        return count
    if fraction is None or not 0 < float(fraction) < 1:
        raise ConfigError(f"forget.fraction={fraction!r} is out of range: it must be > 0 and < 1")
    k = round(float(fraction) * n)
    if not 0 < k < n:
        raise ConfigError(f"forget.fraction={fraction} selects {k} of {n} {unit}: choose a larger fraction or set "
                          "forget.count")
    return k


@configurable
def random_sample(
    train_ids: torch.Tensor, labels: torch.Tensor, fraction: float | None = 0.1, count: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A uniform random sample of the training set: ``count`` samples if given, else ``fraction`` of them."""
    n = len(train_ids)
    k = how_many(n, fraction, count, "samples")
    gen = torch.Generator().manual_seed(int(seed))
    return train_ids[torch.randperm(n, generator=gen)[:k]].sort().values


@configurable
def by_class(train_ids: torch.Tensor, labels: torch.Tensor, classes: list[int] | int = 0) -> torch.Tensor:
    """Every training sample whose label is in ``classes`` (class-wise forgetting)."""
    wanted = [classes] if isinstance(classes, int) else list(classes)
    present = sorted(int(c) for c in labels.unique())
    if not wanted:
        raise ConfigError(f"forget.classes is empty: name one or more of the labels {present}")
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError(f"forget.classes={wanted}: {missing} not among the training labels {present}")
    if len(set(wanted)) == len(present):
        raise ConfigError(f"forget.classes={wanted} names every class: the retain set would be empty")
    return train_ids[torch.isin(labels, torch.tensor(wanted))].sort().values


@configurable
def from_file(train_ids: torch.Tensor, labels: torch.Tensor, path: str | None = None) -> torch.Tensor:
    """Sample ids read from a text file, one integer per line (the format of a run's ``forget_ids.txt``)."""
    if not path:
        raise ConfigError("forget=indices needs forget.path=<file of sample ids, one per line>")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"forget.path={path}: no such file")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"forget.path={path}: not a UTF-8 text file (byte {err.start}); it must hold one sample "
                          "id per line") from None
    lines = [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"forget.path={path}: the file holds no sample ids")
    bad = next((s for s in lines if not ID_LINE.fullmatch(s)), None)
    if bad is not None:
        raise ConfigError(f"forget.path={path}: every line must be one integer sample id, the digits 0-9 only "
                          f"(found {bad[:40]!r})")
    ids_t = torch.tensor([int(s) for s in lines], dtype=torch.int64)
    ordered = ids_t.sort().values  # duplicates are neighbours once sorted: O(n log n) for any file size
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated):
        raise ConfigError(f"forget.path={path}: duplicate sample ids {repeated.unique()[:5].tolist()}")
    outside = ids_t[~torch.isin(ids_t, train_ids)]
    if len(outside):
        raise ConfigError(f"forget.path={path}: ids {outside[:5].tolist()} are not in the training split "
                          f"({len(train_ids)} samples; see a run's forget_ids.txt for valid ids)")
    if len(ids_t) >= len(train_ids):
        raise ConfigError(f"forget.path={path}: it names the whole training set; the retain set would be empty")
    return ids_t.sort().values


@configurable
def by_entity(
    train_ids: torch.Tensor, labels: torch.Tensor, *, groups: torch.Tensor | None,
    entities: list[int] | int | None = None, fraction: float | None = 0.1, count: int | None = None, seed: int = 0,
) -> torch.Tensor:
    """Every training sample owned by the chosen entities: ``entities`` if given, else ``count`` entities, else
    ``fraction`` of the entities with training samples, drawn with ``seed``.

    An entity-level request is "the unlearning request issued by an entity" of the setting (a user deleting their
    account), so it takes all of that entity's samples, however many there are.
    """
    if groups is None:
        raise ConfigError("forget=entity needs a dataset that says which entity owns each sample: set "
                          "dataset.num_entities=<N> for a seeded assignment, or give a tensor_file a `group` array")
    present = groups.unique()  # sorted
    n = len(present)
    if entities is not None:
        wanted = torch.tensor([entities] if isinstance(entities, int) else list(entities), dtype=torch.int64)
        if len(wanted) == 0:
            raise ConfigError("forget.entities is empty: name one or more entity ids, or set it to null and use "
                              "forget.fraction or forget.count")
        missing = wanted[~torch.isin(wanted, present)]
        if len(missing):
            raise ConfigError(f"forget.entities={wanted.tolist()}: {missing[:5].tolist()} own no training sample "
                              f"(the training set has entities {present[:10].tolist()}{'...' if n > 10 else ''})")
        chosen = wanted
    else:
        k = how_many(n, fraction, count, "entities")
        chosen = present[torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:k]]
    forget = train_ids[torch.isin(groups, chosen)]
    if len(forget) == len(train_ids):
        raise ConfigError(f"forget.entities={chosen.tolist()} own the whole training set: the retain set would be "
                          "empty")
    return forget.sort().values


@configurable
def by_subclass(
    train_ids: torch.Tensor, labels: torch.Tensor, *, fine_labels: torch.Tensor | None,
    fine_names: tuple[str, ...] | None = None, subclasses: list[int | str] | int | str | None = None,
) -> torch.Tensor:
    """Every training sample of the fine classes ``subclasses`` (ids, or names where the dataset names them).

    Sub-class forgetting (Chundawat et al., AAAI 2023): the model predicts coarse labels, and one fine class inside
    a coarse label is forgotten while the rest of that coarse label is kept.
    """
    if fine_labels is None:
        raise ConfigError("forget=subclass needs a dataset whose model trains on coarse labels with fine sub-classes "
                          "(dataset=cifar100_coarse, or a tensor_file with a `fine` array)")
    present = sorted(int(c) for c in fine_labels.unique())
    wanted_raw = [subclasses] if isinstance(subclasses, int | str) else list(subclasses or [])
    if not wanted_raw:
        names = f" (or names such as {list(fine_names[:5])})" if fine_names else ""
        raise ConfigError(f"forget=subclass needs forget.subclasses=[...]: one or more of the fine classes "
                          f"{present[:10]}{'...' if len(present) > 10 else ''}{names}")
    wanted = []
    for c in wanted_raw:
        if isinstance(c, str) and not c.lstrip("-").isdigit():
            if not fine_names or c not in fine_names:
                raise ConfigError(f"forget.subclasses: {c!r} is not a fine class name"
                                  + (f"; names are e.g. {list(fine_names[:10])}" if fine_names else
                                     "; this dataset has no class names, use fine label ids"))
            wanted.append(fine_names.index(c))
        else:
            wanted.append(int(c))
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError(f"forget.subclasses={wanted_raw}: {missing} not among the training set's fine classes "
                          f"{present[:10]}{'...' if len(present) > 10 else ''}")
    forget = train_ids[torch.isin(fine_labels, torch.tensor(wanted))]
    if len(forget) == len(train_ids):
        raise ConfigError(f"forget.subclasses={wanted_raw} covers the whole training set: the retain set would be "
                          "empty")
    return forget.sort().values


@configurable
def sequence(requests: list | None = None) -> list[Callable]:
    """One selector per request, for several requests served one after another (``forget=sequential``).

    Each request names a forget option with ``kind`` (``conf/forget/<kind>.yaml``: random, class, entity, subclass,
    indices) and overrides that option's settings, e.g. ``{kind: class, classes: [3]}``. Each selects from the
    training samples that the requests before it left (see ``UnlearningDataModule.request``).
    """
    if not requests or isinstance(requests, str):
        raise ConfigError("forget=sequential needs forget.requests=[...]: e.g. "
                          "'forget.requests=[{kind:class,classes:[3]},{kind:class,classes:[5]}]'")
    kinds = sorted(f.name.removesuffix(".yaml") for f in files("mu_lightning.conf").joinpath("forget").iterdir()
                   if f.name.endswith(".yaml") and f.name != "sequential.yaml")
    selectors = []
    for k, request in enumerate(requests):
        where = f"forget.requests[{k}]"
        if not isinstance(request, dict | DictConfig) or request.get("kind") not in kinds:
            kind = request.get("kind") if isinstance(request, dict | DictConfig) else request
            raise ConfigError(f"{where}: kind={kind!r} is not a forget option; each request is "
                              f"{{kind: <one of {', '.join(kinds)}>, <its settings>}}")
        base = OmegaConf.create(files("mu_lightning.conf").joinpath("forget", f"{request['kind']}.yaml").read_text())
        settings = {key: value for key, value in request.items() if key != "kind"}
        allowed = [key for key in base if not key.startswith("_")]
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise ConfigError(f"{where}: {unknown} not settings of forget={request['kind']} (its settings: "
                              f"{', '.join(allowed) or 'none'})")
        merged = OmegaConf.merge(base, settings)
        selectors.append(instantiate(merged))
    return selectors


STRATA = ("low", "mid", "high")  # forget=memorized: the least, the median and the most memorised samples


@configurable
def memorized(
    train_ids: torch.Tensor, labels: torch.Tensor, *, scores: Callable | None = None, stratum: str = "high",
    fraction: float | None = 0.05, count: int | None = None, members: int = 16, seed: int = 0,
) -> torch.Tensor:
    """``count`` samples (else ``fraction`` of them) by memorisation score (Feldman & Zhang 2020; docs/metrics.md
    §13): the most memorised (``stratum=high``), the least (``low``: scores closest to 0) or those around the
    median rank (``mid``), as
    RUM (Zhao et al., NeurIPS 2024) builds forget sets of low, medium and high memorisation. The scores come from
    ``members`` shadow models on random halves of D drawn with ``seed`` (``scores``, bound by the pipeline: they are
    stage-cache entries, and ``forget_ids.txt`` replays the choice). Ties are broken by sample id."""
    if stratum not in STRATA:
        raise ConfigError(f"forget.stratum={stratum!r} is not a stratum: use one of {', '.join(STRATA)}")
    if scores is None:
        raise ConfigError("forget=memorized needs the memorisation scores of a shadow ensemble, which the pipeline "
                          "binds: run it through train.py (replay its forget_ids.txt with forget=indices elsewhere)")
    if isinstance(members, bool) or not isinstance(members, int) or members < 4:
        raise ConfigError(f"forget.members={members!r} is too few: memorisation needs 4 or more shadow models")
    k = how_many(len(train_ids), fraction, count, "samples")
    mem = torch.as_tensor(scores("memorization", train_ids, members=members, seed=seed), dtype=torch.float64)
    if stratum == "low":  # closest to 0: right whether trained on or not (the most negative are samples that
        order = torch.argsort(torch.nan_to_num(mem.abs(), nan=torch.inf), stable=True)  # training on hurts)
        return train_ids[order[:k]].sort().values
    order = torch.argsort(torch.nan_to_num(mem, nan=-torch.inf), descending=True, stable=True)  # most memorised first
    start = 0 if stratum == "high" else max(0, (len(order) - k) // 2)
    return train_ids[order[start:start + k]].sort().values


@configurable
def subpopulation(
    train_ids: torch.Tensor, labels: torch.Tensor, *, scores: Callable | None = None, fraction: float | None = 0.05,
    count: int | None = None, seed: int = 0,
) -> torch.Tensor:
    """A coherent cluster: the ``count`` samples (else ``fraction`` of them) nearest, in the original model's feature
    space (the input of its last linear layer), to an anchor sample drawn with ``seed``; the anchor is among them.
    The features come from M itself (``scores``, bound by the pipeline; M is a stage-cache entry, and
    ``forget_ids.txt`` replays the choice). Ties are broken by sample id."""
    if scores is None:
        raise ConfigError("forget=subpopulation needs the original model's features, which the pipeline binds: run "
                          "it through train.py (replay its forget_ids.txt with forget=indices elsewhere)")
    k = how_many(len(train_ids), fraction, count, "samples")
    features = torch.as_tensor(scores("features", train_ids), dtype=torch.float64)
    anchor = int(torch.randint(len(train_ids), (1,), generator=torch.Generator().manual_seed(int(seed))))
    distance = (features - features[anchor]).pow(2).sum(1)
    return train_ids[torch.argsort(distance, stable=True)[:k]].sort().values
