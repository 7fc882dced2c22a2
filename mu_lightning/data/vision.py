"""Readers of the official archives of MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100 and SVHN (no torchvision).

Each returns the official training samples first, then the official test samples, with ``split`` marking which is
which, so sample ids are stable across runs. Pixels become float32 in [0, 1] (uint8 / 255); with ``normalize`` each
channel is then standardised with the mean and standard deviation of the official training split
(``sources.standardise``). Formats: IDX (http://yann.lecun.com/exdb/mnist/, "file formats"), CIFAR's pickled
batches (https://www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout"), SVHN's MATLAB ``.mat`` "format 2"
(http://ufldl.stanford.edu/housenumbers/).
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from mu_lightning.configurable import configurable
from mu_lightning.data.archives import RemoteFile, locate
from mu_lightning.data.sources import Samples, assign_entities, standardise
from mu_lightning.errors import ConfigError

MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist")
FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",)
IDX_MD5 = {  # the checksums torchvision and the datasets' pages publish
    "mnist": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion_mnist": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
}
CIFAR10 = RemoteFile("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                     "c58f30108f718f92721af3b95e74349a")
CIFAR100 = RemoteFile("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                      "eb9058c3a382ffc7106e4002c42a8d85")
SVHN_URL = "http://ufldl.stanford.edu/housenumbers"
SVHN_MD5 = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
            "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7"}


@configurable
def mnist(data_dir: str, download: bool = False, normalize: bool = True, num_entities: int | None = None,
          entity_seed: int = 0) -> Samples:
    """MNIST: 60,000 + 10,000 handwritten digits, 1×28×28, 10 classes."""
    return _idx_dataset("mnist", MNIST_URLS, data_dir, download, normalize, num_entities, entity_seed)


@configurable
def fashion_mnist(data_dir: str, download: bool = False, normalize: bool = True, num_entities: int | None = None,
                  entity_seed: int = 0) -> Samples:
    """Fashion-MNIST: 60,000 + 10,000 clothing images, 1×28×28, 10 classes, in MNIST's format."""
    return _idx_dataset("fashion_mnist", FASHION_URLS, data_dir, download, normalize, num_entities, entity_seed)


@configurable
def cifar10(data_dir: str, download: bool = False, normalize: bool = True, num_entities: int | None = None,
            entity_seed: int = 0) -> Samples:
    """CIFAR-10: 50,000 + 10,000 colour images, 3×32×32, 10 classes, from ``cifar-10-python.tar.gz``."""
    path = locate("cifar10", data_dir, [CIFAR10], download)[CIFAR10.name]
    names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]
    batches = [_cifar_batch(path, n, b, "labels", 10) for n, b in zip(names, _read_tar_pickles(path, names),
                                                                       strict=True)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    split = np.repeat([0, 1], [sum(len(b[1]) for b in batches[:5]), len(batches[5][1])])
    return _samples(path, x, y, split, normalize, num_entities, entity_seed)


@configurable
def cifar100(data_dir: str, download: bool = False, label: str = "fine", normalize: bool = True,
             num_entities: int | None = None, entity_seed: int = 0) -> Samples:
    """CIFAR-100: 50,000 + 10,000 colour images, 3×32×32, from ``cifar-100-python.tar.gz``.

    ``label="fine"`` trains on the 100 classes; ``label="coarse"`` trains on the 20 superclasses and keeps the fine
    class of each sample (``Samples.fine``, with its names) for sub-class forgetting, as in Chundawat et al.,
    "Can Bad Teaching Induce Forgetting?" (AAAI 2023), which forgets e.g. ``rocket`` inside ``vehicles 2``.
    """
    if label not in ("fine", "coarse"):
        raise ConfigError(f"dataset.source.label={label!r} is not allowed: use fine (100 classes) or coarse "
                          "(20 superclasses, fine classes kept for forget=subclass)")
    path = locate("cifar100", data_dir, [CIFAR100], download)[CIFAR100.name]
    names = [f"cifar-100-python/{n}" for n in ("train", "test", "meta")]
    train, test, meta = _read_tar_pickles(path, names)
    (x_train, fine_train), (x_test, fine_test) = (_cifar_batch(path, n, b, "fine_labels", 100)
                                                  for n, b in zip(names, (train, test), strict=False))
    x, fine = np.concatenate([x_train, x_test]), np.concatenate([fine_train, fine_test])
    split = np.repeat([0, 1], [len(fine_train), len(fine_test)])
    if label == "fine":
        return _samples(path, x, fine, split, normalize, num_entities, entity_seed)
    coarse = np.concatenate([_cifar_batch(path, n, b, "coarse_labels", 20)[1]
                             for n, b in zip(names, (train, test), strict=False)])
    fine_names = meta.get("fine_label_names") if isinstance(meta, dict) else None
    if not isinstance(fine_names, list) or len(fine_names) != 100 or not all(isinstance(n, str) for n in fine_names):
        raise ConfigError(f"{path}: member {names[2]} has no list of 100 fine_label_names: is it the official "
                          "archive?")
    return _samples(path, x, coarse, split, normalize, num_entities, entity_seed,
                    fine=torch.tensor(fine, dtype=torch.int64), fine_names=tuple(fine_names))


@configurable
def svhn(data_dir: str, download: bool = False, extra: bool = False, normalize: bool = True,
         num_entities: int | None = None, entity_seed: int = 0) -> Samples:
    """SVHN: 73,257 + 26,032 house-number digits, 3×32×32, 10 classes; ``extra`` adds 531,131 easier training images.

    The files label the digit 0 as 10; it becomes 0 here.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    names = ["train_32x32.mat", *(["extra_32x32.mat"] if extra else []), "test_32x32.mat"]
    paths = locate("svhn", data_dir, [RemoteFile(n, (f"{SVHN_URL}/{n}",), SVHN_MD5[n]) for n in names], download)
    xs, ys = [], []
    for name in names:
        try:
            mat = loadmat(paths[name], variable_names=["X", "y"])
            x, y = mat["X"], mat["y"]
        except (ValueError, KeyError, OSError, TypeError, NotImplementedError, MatReadError) as err:
            raise ConfigError(f"{paths[name]} is not an SVHN .mat file with X [32, 32, 3, N] and y: "
                              f"{type(err).__name__}: {err}") from None
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[-1]:
            raise ConfigError(f"{paths[name]}: X has shape {list(x.shape)} and y {list(y.shape)}; an SVHN file holds "
                              "X [32, 32, 3, N] and y [N, 1], one label per image")
        xs.append(x.transpose(3, 2, 0, 1))  # [H, W, C, N] -> [N, C, H, W]
        ys.append(_labels(paths[name], y.reshape(-1), 1, 10, "1 to 10 (10 is the digit 0)") % 10)
    split = np.repeat([0] * (len(names) - 1) + [1], [len(y) for y in ys])
    return _samples(paths[names[0]], np.concatenate(xs), np.concatenate(ys), split, normalize, num_entities,
                    entity_seed)


def _idx_dataset(name: str, base_urls: tuple[str, ...], data_dir: str, download: bool, normalize: bool,
                 num_entities: int | None, entity_seed: int) -> Samples:
    files = [RemoteFile(f, tuple(f"{u}/{f}" for u in base_urls), md5) for f, md5 in IDX_MD5[name].items()]
    paths = locate(name, data_dir, files, download)
    x_train, y_train, x_test, y_test = (read_idx(paths[f.name]) for f in files)
    for k, (images, labels) in enumerate(((x_train, y_train), (x_test, y_test))):
        image_file, label_file = paths[files[2 * k].name], paths[files[2 * k + 1].name]
        if images.ndim != 3:
            raise ConfigError(f"{image_file}: holds an array of shape {list(images.shape)}; images are [N, H, W]")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ConfigError(f"{label_file}: holds labels of shape {list(labels.shape)} for the {len(images)} "
                              f"images of {image_file.name}; it must hold [{len(images)}], one label per image")
        _labels(label_file, labels, 0, 9, "0 to 9")
    split = np.repeat([0, 1], [len(y_train), len(y_test)])
    x = np.concatenate([x_train, x_test])[:, None]
    return _samples(paths[files[0].name], x, np.concatenate([y_train, y_test]), split, normalize, num_entities,
                    entity_seed)


def read_idx(path: Path) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes: magic ``00 00 08 <ndim>``, ``ndim`` big-endian uint32 sizes, data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ConfigError(f"{path} is not a gzipped IDX file: {err}") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()}, expected 000008xx)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ConfigError(f"{path}: the header is cut short ({len(raw)} bytes, it promises {ndim} sizes)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ConfigError(f"{path}: the header promises {list(dims)} ({int(np.prod(dims))} bytes), the file holds "
                          f"{data.size}")
    return data.reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a pickle can run code, an archive should not."""

    ALLOWED = {"_reconstruct": np.zeros(1).__reduce__()[0], "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],
               "ndarray": np.ndarray, "dtype": np.dtype}

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in self.ALLOWED:
            return self.ALLOWED[name]
        if (module, name) == ("_codecs", "encode"):  # how Python 3 writes bytes at pickle protocol 2
            return codecs.encode
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset batch")


def _cifar_batch(path: Path, member: str, batch, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch's images ``[N, 3, 32, 32]`` and labels, checked against each other: a dict with ``data``
    (uint8 ``[N, 3072]``) and ``label_key`` (N integers from 0 to ``classes - 1``)."""
    where = f"{path}: member {member}"
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise ConfigError(f"{where} is not a CIFAR batch (a dict with 'data' and {label_key!r}): is it the official "
                          "archive?")
    x, y = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ConfigError(f"{where}: data is {x.dtype} {list(x.shape)}; CIFAR images are uint8 [N, 3072]")
    if y.ndim != 1 or len(y) != len(x):
        raise ConfigError(f"{where}: {len(x)} images but {label_key} has shape {list(y.shape)}; it must hold one "
                          "label per image")
    return x.reshape(-1, 3, 32, 32), _labels(Path(where), y, 0, classes - 1, f"0 to {classes - 1}")


def _labels(path: Path, y: np.ndarray, low: int, high: int, allowed: str) -> np.ndarray:
    """``y`` if it holds integers from ``low`` to ``high``; else a ConfigError naming ``path``."""
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < low or y.max() > high):
        found = f"{y.dtype}" if not np.issubdtype(y.dtype, np.integer) else f"{y.min()} to {y.max()}"
        raise ConfigError(f"{path}: labels must be integers from {allowed}; found {found}")
    return y


def _read_tar_pickles(path: Path, members: list[str]) -> list[dict]:
    """The pickled dicts ``members`` of a ``.tar.gz``, read in one pass without extracting; keys decoded as text
    (latin-1, as the official batches were pickled by Python 2)."""
    found = {}
    try:
        with tarfile.open(path, "r|gz") as tar:  # a stream: the archive is decompressed once
            for info in tar:
                if info.name in members:
                    raw = tar.extractfile(info).read()
                    found[info.name] = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (tarfile.TarError, OSError, EOFError, zlib.error, pickle.UnpicklingError) as err:
        raise ConfigError(f"{path} could not be read as the official archive: {err}") from None
    missing = [m for m in members if m not in found]
    if missing:
        raise ConfigError(f"{path} has no member {missing[0]}: is it the official archive?")
    return [found[m] for m in members]


def _samples(path: Path, x: np.ndarray, y: np.ndarray, split: np.ndarray, normalize: bool,
             num_entities: int | None, entity_seed: int, **extra) -> Samples:
    """uint8 ``[N, C, H, W]`` images → a float32 Samples in [0, 1], standardised on the training split if asked."""
    if len(x) != len(y):
        raise ConfigError(f"{path}: {len(x)} images but {len(y)} labels")
    split_t = torch.tensor(split, dtype=torch.int64)
    images = torch.from_numpy(np.asarray(x, dtype=np.float32)).div_(255.0)
    stats = standardise(images, split_t) if normalize else None
    return Samples(x=images, y=torch.tensor(np.asarray(y), dtype=torch.int64), split=split_t,
                   group=assign_entities(len(y), num_entities, entity_seed), pixel_stats=stats, **extra)
