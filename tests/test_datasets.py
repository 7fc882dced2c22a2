"""Every dataset reader loads tiny files written here in its official format, through the config, as the CLI would.

No test downloads anything: the download path is exercised with ``file://`` URLs.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy.io import savemat

from mu_lightning.data.archives import RemoteFile, locate
from mu_lightning.data.sources import assign_entities
from mu_lightning.data.tensor_file import tensor_file
from mu_lightning.errors import ConfigError
from mu_lightning.files import file_digest
from tests.helpers import compose_cfg

RNG = np.random.default_rng(0)
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")


def load(tmp_path, *overrides):
    cfg = compose_cfg(tmp_path, list(overrides), fast=False)
    return instantiate(cfg.dataset.source)()


def write_idx(path, array: np.ndarray):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root, n_train=30, n_test=10):
    arrays = [RNG.integers(0, 256, (n_train, 28, 28)), RNG.integers(0, 10, n_train),
              RNG.integers(0, 256, (n_test, 28, 28)), RNG.integers(0, 10, n_test)]
    root.mkdir(parents=True, exist_ok=True)
    for name, a in zip(IDX_FILES, arrays, strict=True):
        write_idx(root / name, a)
    return arrays


def write_tar_pickles(path, members: dict[str, dict]):
    """A .tar.gz of pickled dicts, protocol 2 like the official (Python 2) CIFAR batches."""
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def write_cifar10(root, per_batch=6, n_test=8):
    root.mkdir(parents=True, exist_ok=True)
    batches = {f"cifar-10-batches-py/data_batch_{i}": per_batch for i in range(1, 6)}
    batches["cifar-10-batches-py/test_batch"] = n_test
    members = {name: {"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                      "labels": RNG.integers(0, 10, n).tolist()} for name, n in batches.items()}
    members["cifar-10-batches-py/batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    write_tar_pickles(root / "cifar-10-python.tar.gz", members)
    return members


FINE_NAMES = ["apple", "rocket", "baby", "lamp", "sea", "mushroom"] + [f"class{i}" for i in range(6, 100)]


def write_cifar100(root, n_train=60, n_test=20):
    """Fine classes 0-5 only, coarse = fine // 2; each image's brightness encodes its coarse class (learnable)."""
    root.mkdir(parents=True, exist_ok=True)
    members = {}
    for name, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 6
        coarse = fine // 2
        data = (coarse[:, None] * 100 + RNG.integers(0, 40, (n, 3072))).astype(np.uint8)
        members[f"cifar-100-python/{name}"] = {"data": data, "fine_labels": fine.tolist(),
                                               "coarse_labels": coarse.tolist()}
    members["cifar-100-python/meta"] = {"fine_label_names": FINE_NAMES,
                                        "coarse_label_names": [f"super{i}" for i in range(20)]}
    write_tar_pickles(root / "cifar-100-python.tar.gz", members)
    return members


def write_svhn(root, n_train=12, n_test=5):
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, where 10 is the digit 0
        savemat(root / name, {"X": x, "y": y})
        out[name] = (x, y)
    return out


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets_load_train_then_test(tmp_path, name):
    x_tr, y_tr, x_te, y_te = write_mnist(tmp_path / "d")
    s = load(tmp_path, f"dataset={name}", f"dataset.data_dir={tmp_path / 'd'}", "dataset.source.normalize=false")
    assert s.x.shape == (40, 1, 28, 28) and s.x.dtype == torch.float32
    assert torch.equal(s.split, torch.tensor([0] * 30 + [1] * 10))
    assert torch.equal(s.y, torch.tensor(np.concatenate([y_tr, y_te])))
    assert torch.allclose(s.x[31, 0], torch.tensor(x_te[1] / 255.0, dtype=torch.float32))
    assert s.group is None and s.fine is None


def test_normalisation_uses_training_split_statistics(tmp_path):
    write_mnist(tmp_path / "d")
    raw = load(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path / 'd'}", "dataset.source.normalize=false")
    s = load(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path / 'd'}")
    train = s.x[s.split == 0]
    assert abs(float(train.mean())) < 1e-5 and float(train.std()) == pytest.approx(1.0, abs=1e-4)
    mean, std = raw.x[:30].mean(), raw.x[:30].std()
    assert torch.allclose(s.x[35], (raw.x[35] - mean) / std, atol=1e-5)  # test samples use train statistics


def test_cifar10_pixel_layout_and_labels(tmp_path):
    members = write_cifar10(tmp_path / "c")
    s = load(tmp_path, "dataset=cifar10", f"dataset.data_dir={tmp_path / 'c'}", "dataset.source.normalize=false")
    assert s.x.shape == (38, 3, 32, 32) and int((s.split == 1).sum()) == 8
    second = members["cifar-10-batches-py/data_batch_2"]
    # sample 7 is the second batch's second image; row-major 1024 red, 1024 green, 1024 blue values
    assert float(s.x[7, 1, 2, 3]) == pytest.approx(second["data"][1, 1024 + 2 * 32 + 3] / 255.0)
    assert int(s.y[7]) == second["labels"][1]
    assert s.y[30:].tolist() == members["cifar-10-batches-py/test_batch"]["labels"]


def test_cifar100_fine_or_coarse_labels(tmp_path):
    write_cifar100(tmp_path / "c")
    fine = load(tmp_path, "dataset=cifar100", f"dataset.data_dir={tmp_path / 'c'}")
    coarse = load(tmp_path, "dataset=cifar100_coarse", f"dataset.data_dir={tmp_path / 'c'}")
    assert fine.y[:7].tolist() == [0, 1, 2, 3, 4, 5, 0] and fine.fine is None
    assert coarse.y[:7].tolist() == [0, 0, 1, 1, 2, 2, 0]
    assert torch.equal(coarse.fine, fine.y) and coarse.fine_names[1] == "rocket"
    assert torch.equal(coarse.x, fine.x)
    with pytest.raises(ConfigError, match="dataset.source.label='medium'"):
        load(tmp_path, "dataset=cifar100", f"dataset.data_dir={tmp_path / 'c'}", "dataset.source.label=medium")


def test_svhn_layout_and_label_ten_is_zero(tmp_path):
    files = write_svhn(tmp_path / "s")
    s = load(tmp_path, "dataset=svhn", f"dataset.data_dir={tmp_path / 's'}", "dataset.source.normalize=false")
    x_tr, y_tr = files["train_32x32.mat"]
    assert s.x.shape == (17, 3, 32, 32) and int((s.split == 0).sum()) == 12
    assert float(s.x[4, 2, 5, 6]) == pytest.approx(x_tr[5, 6, 2, 4] / 255.0)
    assert s.y[:12].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]


def test_missing_files_name_the_files_and_the_download_switch(tmp_path):
    with pytest.raises(ConfigError, match=r"lacks \['t10k-images-idx3-ubyte.gz'.*dataset.download=true"):
        (tmp_path / "d").mkdir()
        write_idx(tmp_path / "d" / IDX_FILES[0], np.zeros((2, 28, 28)))
        write_idx(tmp_path / "d" / IDX_FILES[1], np.zeros(2))
        load(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path / 'd'}")
    with pytest.raises(ConfigError, match="cifar-100-python.tar.gz"):
        load(tmp_path, "dataset=cifar100_coarse", f"dataset.data_dir={tmp_path / 'empty'}")


def test_damaged_files_are_config_errors(tmp_path):
    write_mnist(tmp_path / "d")
    (tmp_path / "d" / IDX_FILES[2]).write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte.gz is not a gzipped IDX file"):
        load(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path / 'd'}")
    (tmp_path / "c").mkdir()
    write_tar_pickles(tmp_path / "c" / "cifar-10-python.tar.gz",
                      {"cifar-10-batches-py/data_batch_1": {"data": np.zeros((1, 3072), np.uint8), "labels": [0]}})
    with pytest.raises(ConfigError, match="no member cifar-10-batches-py/data_batch_2"):
        load(tmp_path, "dataset=cifar10", f"dataset.data_dir={tmp_path / 'c'}")


def test_archive_pickles_cannot_run_code(tmp_path):
    (tmp_path / "c").mkdir()
    members = {f"cifar-10-batches-py/{n}": {"data": np.zeros((1, 3072), np.uint8), "labels": [0]}
               for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]}
    members["cifar-10-batches-py/data_batch_3"] = {"data": print}  # a pickle that would import a callable
    write_tar_pickles(tmp_path / "c" / "cifar-10-python.tar.gz", members)
    with pytest.raises(ConfigError, match=r"builtin__\.print is not allowed"):
        load(tmp_path, "dataset=cifar10", f"dataset.data_dir={tmp_path / 'c'}")


def test_download_verifies_the_checksum(tmp_path):
    served = tmp_path / "server" / "file.bin"
    served.parent.mkdir()
    served.write_bytes(b"official bytes")
    good = RemoteFile("file.bin", ("file:///nonexistent/file.bin", served.as_uri()), file_digest(served, "md5"))
    paths = locate("demo", tmp_path / "data", [good], download=True)  # the first URL fails, the mirror answers
    assert paths["file.bin"].read_bytes() == b"official bytes"
    bad = RemoteFile("other.bin", (served.as_uri(),), "0" * 32)
    with pytest.raises(ConfigError, match="MD5 .* expected 0000"):
        locate("demo", tmp_path / "data", [bad], download=True)
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith(".")) == ["file.bin"]


def test_entity_assignment_is_seeded_and_balanced():
    g = assign_entities(103, 10, seed=0)
    assert sorted(torch.bincount(g).tolist()) == [10] * 7 + [11] * 3
    assert torch.equal(g, assign_entities(103, 10, seed=0)) and not torch.equal(g, assign_entities(103, 10, seed=1))
    assert sorted(assign_entities(3, 5).tolist()) == [0, 1, 2]  # more entities than samples: one sample each
    with pytest.raises(ConfigError, match="dataset.num_entities=0 is not allowed"):
        assign_entities(103, 0)


def test_vision_datasets_get_entities_on_request(tmp_path):
    write_mnist(tmp_path / "d")
    s = load(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path / 'd'}", "dataset.num_entities=4")
    assert sorted(torch.bincount(s.group).tolist()) == [10, 10, 10, 10]


def test_subclass_forgetting_end_to_end_on_cifar100_files(tmp_path, run_pipeline):
    write_cifar100(tmp_path / "c")
    res = run_pipeline("dataset=cifar100_coarse", f"dataset.data_dir={tmp_path / 'c'}", "forget=subclass",
                       "forget.subclasses=[rocket]", "unlearner=none", "train.epochs=10", "logger=none",
                       "dataset.val_fraction=0.2", fast=False)
    ids = [int(s) for s in (tmp_path / "run" / "forget_ids.txt").read_text().split()]
    train = torch.load(tmp_path / "run" / "logits.pt", weights_only=True)["ids"]["train"].tolist()
    assert ids == [i for i in train if i % 6 == 1]  # fine class 1 ("rocket") is every sixth training image
    assert res["sizes"]["train"] == 48 and res["sizes"]["test"] == 20
    # the coarse labels are learnable from brightness: retained and test samples are classified well
    assert res["metrics"]["original/retain_acc"] > 0.9 and res["metrics"]["original/test_acc"] > 0.8


def own_file(tmp_path, suffix=".npz", **arrays):
    path = tmp_path / f"own{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: torch.as_tensor(v) for k, v in arrays.items()}, path)
    return path


def load_own(tmp_path, path, *overrides, shape="[1,2,2]", classes=3):
    return load(tmp_path, "dataset=tensor_file", f"dataset.path={path}", f"dataset.input_shape={shape}",
                f"dataset.num_classes={classes}", *overrides)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_tensor_file_keeps_groups_and_split(tmp_path, suffix):
    x = RNG.normal(size=(6, 1, 2, 2)).astype(np.float32)
    path = own_file(tmp_path, suffix, x=x, y=np.array([0, 1, 2, 0, 1, 2]), group=np.array([4, 4, 8, 8, 9, 9]),
                    split=np.array([0, 0, 0, 0, 1, 1], dtype=np.int8))
    s = load_own(tmp_path, path)
    assert torch.equal(s.x, torch.tensor(x)) and s.y.dtype == torch.int64
    assert s.group.tolist() == [4, 4, 8, 8, 9, 9] and s.split.tolist() == [0, 0, 0, 0, 1, 1]


def test_tensor_file_uint8_pixels_and_seeded_entities(tmp_path):
    path = own_file(tmp_path, x=np.full((4, 1, 2, 2), 51, dtype=np.uint8), y=np.arange(4) % 3)
    s = load_own(tmp_path, path, "dataset.num_entities=2")
    assert torch.allclose(s.x, torch.full((4, 1, 2, 2), 0.2)) and sorted(s.group.tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.zeros((3, 1, 2, 2)), "y": np.zeros(4, int)}, r"y has shape \[4\]; it must be \[3\]"),
    ({"x": np.stack([np.zeros((1, 2, 2)), np.full((1, 2, 2), np.inf), np.zeros((1, 2, 2))]), "y": np.zeros(3, int)},
     r"NaN or infinite values in samples \[1\]"),
    ({"x": np.zeros((3, 1, 2, 2), np.int32), "y": np.zeros(3, int)}, "x has dtype torch.int32"),
    ({"x": np.zeros((3, 1, 2, 2)), "y": np.zeros(3)}, "y has dtype torch.float64; it must be an integer type"),
    ({"x": np.zeros((3, 1, 2, 2)), "y": np.zeros(3, int), "groups": np.zeros(3, int)}, r"unknown \['groups'\]"),
    ({"x": np.zeros((3, 1, 2, 2))}, r"missing \['y'\]"),
    ({"x": np.zeros((3, 1, 2, 2)), "y": np.zeros(3, int), "split": np.array([0, 1, 2])}, "only 0 .train. and 1"),
    ({"x": np.zeros((3, 1, 2, 2)), "y": np.array([0, -1, 0])}, "y has negative labels"),
])
def test_tensor_file_bad_input_is_a_config_error(tmp_path, arrays, message):
    with pytest.raises(ConfigError, match=message):
        tensor_file(str(own_file(tmp_path, **arrays)), input_shape=[1, 2, 2], num_classes=3)


def test_tensor_file_says_what_the_config_needs(tmp_path):
    path = own_file(tmp_path, x=np.zeros((3, 3, 4, 4), np.float32), y=np.array([0, 4, 1]))
    with pytest.raises(ConfigError, match=r"dataset.input_shape=\[3,4,4\] dataset.num_classes=5"):
        load(tmp_path, "dataset=tensor_file", f"dataset.path={path}")
    with pytest.raises(ConfigError, match=r"dataset.input_shape=\[1, 2, 2\] but .* shape \[3, 4, 4\]"):
        load_own(tmp_path, path)
    with pytest.raises(ConfigError, match="no such file"):
        load_own(tmp_path, tmp_path / "absent.npz")
    (tmp_path / "own.csv").write_text("1,2")
    with pytest.raises(ConfigError, match="unknown file type '.csv'"):
        load_own(tmp_path, tmp_path / "own.csv")


def test_download_true_fetches_the_missing_files_then_loads(tmp_path, monkeypatch):
    from mu_lightning.data import vision

    served = tmp_path / "mirror"
    write_mnist(served)
    monkeypatch.setattr(vision, "MNIST_URLS", (served.as_uri(),))
    monkeypatch.setitem(vision.IDX_MD5, "mnist", {f: file_digest(served / f, "md5") for f in IDX_FILES})
    s = load(tmp_path, "dataset=mnist", f"dataset.data_dir={tmp_path / 'd'}", "dataset.download=true")
    assert len(s.y) == 40 and sorted(p.name for p in (tmp_path / "d").glob("*.gz")) == sorted(IDX_FILES)


def _damaged_cifar10(root, damage):
    members = write_cifar10(root)
    batch = members["cifar-10-batches-py/data_batch_2"]
    if damage == "labels_shifted":
        batch["labels"] = batch["labels"][1:]
    elif damage == "data_not_uint8":
        batch["data"] = batch["data"].astype(np.float64)
    elif damage == "data_wrong_width":
        batch["data"] = batch["data"][:, :100]
    elif damage == "labels_missing":
        del batch["labels"]
    else:
        batch["labels"] = [*batch["labels"][:-1], 10]
    write_tar_pickles(root / "cifar-10-python.tar.gz", members)


@pytest.mark.parametrize(("damage", "message"), [
    ("labels_shifted", r"data_batch_2: 6 images but labels has shape \[5\]"),
    ("data_not_uint8", r"data_batch_2: data is float64 \[6, 3072\]; CIFAR images are uint8"),
    ("data_wrong_width", r"data_batch_2: data is uint8 \[6, 100\]"),
    ("labels_missing", r"data_batch_2 is not a CIFAR batch \(a dict with 'data' and 'labels'\)"),
    ("label_out_of_range", r"data_batch_2: labels must be integers from 0 to 9; found \d to 10"),
])
def test_a_damaged_cifar_batch_names_the_member_and_the_fault(tmp_path, damage, message):
    _damaged_cifar10(tmp_path / "c", damage)
    with pytest.raises(ConfigError, match=r"cifar-10-python.tar.gz: member cifar-10-batches-py/" + message):
        load(tmp_path, "dataset=cifar10", f"dataset.data_dir={tmp_path / 'c'}")


def test_a_damaged_cifar100_archive_names_the_fault(tmp_path):
    members = write_cifar100(tmp_path / "c")
    members["cifar-100-python/test"]["coarse_labels"][0] = 20
    write_tar_pickles(tmp_path / "c" / "cifar-100-python.tar.gz", members)
    with pytest.raises(ConfigError, match=r"member cifar-100-python/test: labels must be integers from 0 to 19"):
        load(tmp_path, "dataset=cifar100_coarse", f"dataset.data_dir={tmp_path / 'c'}")
    members["cifar-100-python/test"]["coarse_labels"][0] = 0
    members["cifar-100-python/meta"] = {"fine_label_names": FINE_NAMES[:50]}
    write_tar_pickles(tmp_path / "c" / "cifar-100-python.tar.gz", members)
    with pytest.raises(ConfigError, match=r"member cifar-100-python/meta has no list of 100 fine_label_names"):
        load(tmp_path, "dataset=cifar100_coarse", f"dataset.data_dir={tmp_path / 'c'}")


@pytest.mark.parametrize(("damage", "message"), [
    ("300_images_250_labels", r"train-labels-idx1-ubyte.gz: holds labels of shape \[250\] for the 300 images of "
                              r"train-images-idx3-ubyte.gz; it must hold \[300\]"),
    ("label_out_of_range", r"t10k-labels-idx1-ubyte.gz: labels must be integers from 0 to 9; found \d to 11"),
    ("header_cut_short", r"t10k-images-idx3-ubyte.gz: the header is cut short \(9 bytes, it promises 3 sizes\)"),
    ("images_not_3d", r"train-images-idx3-ubyte.gz: holds an array of shape \[30, 784\]; images are \[N, H, W\]"),
])
def test_a_damaged_idx_pair_names_the_file_and_the_fault(tmp_path, damage, message):
    root = tmp_path / "d"
    arrays = write_mnist(root, n_train=300 if damage.startswith("300") else 30)
    if damage.startswith("300"):
        write_idx(root / IDX_FILES[1], arrays[1][:250])
    elif damage == "label_out_of_range":
        write_idx(root / IDX_FILES[3], np.append(arrays[3][:-1], 11))
    elif damage == "header_cut_short":
        with gzip.open(root / IDX_FILES[2], "wb") as f:
            f.write(struct.pack(">BBBB", 0, 0, 8, 3) + b"\x00\x00\x00\x0a\x00")
    else:
        write_idx(root / IDX_FILES[0], arrays[0].reshape(30, 784))
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, "dataset=mnist", f"dataset.data_dir={root}")


@pytest.mark.parametrize(("damage", "message"), [
    ("more_labels", r"train_32x32.mat: X has shape \[32, 32, 3, 12\] and y \[13, 1\]"),
    ("label_zero", r"train_32x32.mat: labels must be integers from 1 to 10"),
    ("empty_file", r"test_32x32.mat is not an SVHN .mat file"),
])
def test_a_damaged_svhn_file_names_the_file_and_the_fault(tmp_path, damage, message):
    root = tmp_path / "s"
    out = write_svhn(root)
    x, y = out["train_32x32.mat"]
    if damage == "more_labels":
        savemat(root / "train_32x32.mat", {"X": x, "y": np.vstack([y, y[:1]])})
    elif damage == "label_zero":
        savemat(root / "train_32x32.mat", {"X": x, "y": y - 1})
    else:
        (root / "test_32x32.mat").write_bytes(b"")
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, "dataset=svhn", f"dataset.data_dir={root}")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_npz_is_a_config_error(tmp_path, cut):
    path = own_file(tmp_path, x=RNG.random((50, 1, 2, 2)), y=np.zeros(50, int))
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(ConfigError, match=r"dataset.path=.*own.npz: not a readable .npz of numeric arrays"):
        tensor_file(str(path), input_shape=[1, 2, 2], num_classes=1)
