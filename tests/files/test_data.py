"""pri.files.data: IDX parsing, digits split, CIFAR batches, image folders, missing-data errors."""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from pri.files.data import (dataset_info, dataset_mean_std, digits_split, load_dataset, parse_idx, prepare,
    read_cifar_batch)
from pri.errors import PriError

FMNIST = "/usr/share/datasets/fashion-mnist"


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.tobytes()


def write_fake_fmnist(root, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labs = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        for kind, arr, nd in (("images", imgs, 3), ("labels", labs, 1)):
            name = f"{prefix}-{kind}-idx{nd}-ubyte"
            data = idx_bytes(arr)
            if gz:
                name += ".gz"
                data = gzip.compress(data)
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        out[prefix] = (imgs, labs)
    return out


def test_parse_idx_roundtrip_and_errors():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(a)), a)
    b = np.array([1, -2, 70000], dtype=">i4")
    got = parse_idx(idx_bytes(b))
    assert got.tolist() == [1, -2, 70000] and got.dtype.byteorder in ("=", "<", "|")
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bytes"):
        parse_idx(idx_bytes(a)[:-1])


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_tiny_idx(tmp_path, gz):
    ref = write_fake_fmnist(str(tmp_path), gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y, meta = load_dataset("fashion_mnist", str(tmp_path), split)
        imgs, labs = ref[prefix]
        assert x.dtype == torch.float32 and x.shape == (len(labs), 1, 28, 28)
        assert torch.equal(x, torch.from_numpy(imgs).float().div(255).unsqueeze(1))
        assert y.dtype == torch.int64 and y.tolist() == labs.tolist()
        assert meta["num_classes"] == 10 and meta["img_size"] == 28 and meta["in_chans"] == 1
        fname = f"{prefix}-images-idx3-ubyte" + (".gz" if gz else "")
        with open(tmp_path / fname, "rb") as f:
            assert meta["sha256"][fname] == hashlib.sha256(f.read()).hexdigest()


def test_fashion_mnist_corrupt_file_names_option(tmp_path):
    write_fake_fmnist(str(tmp_path))
    with open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5))
    with pytest.raises(PriError) as e:
        load_dataset("fashion_mnist", str(tmp_path), "test", option="data.root")
    assert e.value.option == "data.root"


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    x, y, meta = load_dataset("fashion_mnist", None, "test")
    assert x.shape == (10000, 1, 28, 28) and meta["num_classes"] == 10
    assert torch.bincount(y).tolist() == [1000] * 10
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    xt, yt, mt = load_dataset("fashion_mnist", FMNIST, "train")
    xv, yv, mv = load_dataset("fashion_mnist", FMNIST, "val")
    # the validation split is held out of the training files: every 12th image of each class
    assert xt.shape == (55000, 1, 28, 28) and len(yt) == 55000 and int(yt.max()) == 9
    assert len(yv) == 5000 and torch.bincount(yv).tolist() == [500] * 10
    assert abs(float(torch.cat([xt, xv]).mean()) - dataset_mean_std("fashion_mnist")[0][0]) < 1e-3
    assert not any(torch.equal(xv[i], xt[j]) for i in range(0, 5000, 997) for j in range(0, 55000, 7919))
    assert all(len(h) == 64 for h in mt["sha256"].values()) and "val part" in mv["source"]


def test_digits_fixed_split():
    xtr, ytr, mtr = load_dataset("digits", split="train")
    xva, yva, _ = load_dataset("digits", split="val")
    xte, yte, mte = load_dataset("digits", split="test")
    assert xtr.shape[1:] == (1, 8, 8) and len(ytr) + len(yva) + len(yte) == 1797
    assert (len(ytr) + len(yva), len(yte)) == (1442, 355) and len(yva) == 117
    assert float(xtr.max()) == 1.0 and float(xtr.min()) == 0.0
    assert set(torch.bincount(yte).tolist()) <= {34, 35, 36}
    from sklearn.datasets import load_digits

    d = load_digits()
    test = digits_split(d.target)
    assert np.allclose(xte.squeeze(1).numpy(), d.images[test] / 16.0)
    x2, y2, _ = load_dataset("digits", split="test")
    assert torch.equal(x2, xte) and torch.equal(y2, yte)
    assert mtr["sha256"] == mte["sha256"]


def write_cifar(root, name="cifar10", n_per=3, protocol=2, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"]
    ref = {}
    for fn in files:
        data = rng.integers(0, 256, size=(n_per, 3072), dtype=np.uint8)
        if name == "cifar10":
            labels = rng.integers(0, 10, size=n_per).tolist()
            obj = {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a.png"] * n_per}
        else:
            labels = rng.integers(0, 100, size=n_per).tolist()
            obj = {b"fine_labels": labels, b"coarse_labels": [0] * n_per, b"data": data}
        with open(os.path.join(root, fn), "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
        ref[fn] = (data, labels)
    return ref


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_fake_batches(tmp_path, protocol):
    root = tmp_path / "cifar-10-batches-py"
    ref = write_cifar(str(root), protocol=protocol)
    x, y, meta = load_dataset("cifar10", str(tmp_path), "train")  # found in the subfolder
    assert x.shape == (15, 3, 32, 32) and meta["num_classes"] == 10 and meta["in_chans"] == 3
    want = np.concatenate([ref[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(want).float() / 255)
    assert y.tolist() == sum((ref[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    xt, yt, _ = load_dataset("cifar10", str(root), "test")
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == ref["test_batch"][1]


def test_cifar100_fine_labels(tmp_path):
    ref = write_cifar(str(tmp_path), "cifar100")
    x, y, meta = load_dataset("cifar100", str(tmp_path), "test")
    assert meta["num_classes"] == 100 and y.tolist() == ref["test"][1]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_pickle_refuses_code(tmp_path):
    write_cifar(str(tmp_path))
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        read_cifar_batch(str(tmp_path / "test_batch"))
    with pytest.raises(PriError) as e:
        load_dataset("cifar10", str(tmp_path), "test", option="data.root")
    assert e.value.option == "data.root" and "refused" in e.value.message


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "cifar100", "imagefolder"])
def test_missing_data_names_option(tmp_path, name):
    with pytest.raises(PriError) as e:
        load_dataset(name, str(tmp_path / "nowhere"), "test", option="data.root")
    assert e.value.option == "data.root"
    assert str(tmp_path / "nowhere") in e.value.message and "data.root" in e.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(PriError) as e:
        load_dataset(name, str(tmp_path / "empty"), "train")
    assert e.value.option == "--data-root" and str(tmp_path / "empty") in e.value.message


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(PriError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", str(tmp_path), "train")
    with pytest.raises(PriError, match="cifar10"):
        load_dataset("cifar10", None, "train")


def test_unknown_dataset_and_split():
    with pytest.raises(PriError) as e:
        load_dataset("mnist3d")
    assert e.value.option == "--dataset"
    with pytest.raises(ValueError):  # a split is chosen by the suite's code, never by a user
        load_dataset("digits", split="valid")


def test_imagefolder_lazy(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, n in (("cat", 2), ("dog", 3)):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, size=(20 + i, 30, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (tmp_path / "val" / "cat" / "notes.txt").write_text("not an image")  # skipped: not an image
    ds, y, meta = load_dataset("imagefolder", str(tmp_path), "test", img_size=16)
    assert len(ds) == 5 and y.tolist() == [0, 0, 1, 1, 1]
    assert meta["num_classes"] == 2 and meta["class_names"] == ["cat", "dog"]
    x0, l0 = ds[4]
    assert x0.shape == (3, 16, 16) and l0 == 1 and 0.0 <= float(x0.min()) <= float(x0.max()) <= 1.0
    from pri.files.data import batches

    got = list(batches(ds, y, 4))
    assert [b[0].shape[0] for b in got] == [4, 1] and got[1][1].tolist() == [1]


def test_prepare_and_stats():
    x = torch.rand(2, 1, 8, 8)
    out = prepare(x, 16, (0.5,), (0.25,))
    assert out.shape == (2, 1, 16, 16)
    assert torch.allclose(prepare(x, 8, (0.5,), (0.25,)), (x - 0.5) / 0.25)
    assert prepare(x, 8, (0.1, 0.2, 0.3), (1, 1, 1)).shape == (2, 3, 8, 8)
    m, s = dataset_mean_std("cifar10")
    assert len(m) == 3 and len(s) == 3
    assert dataset_info("fashion_mnist")["img_size"] == 28
