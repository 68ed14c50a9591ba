"""Real datasets as in-memory tensors with one API.

``load_dataset(name, root, split)`` returns ``(images, labels, meta)``:

- ``images``: float32 ``[N, C, H, W]`` in [0, 1] at the dataset's native size (Fashion-MNIST 28,
  digits 8, CIFAR 32), or for ``imagefolder`` a lazy ``torch.utils.data.Dataset`` of
  ``(image [3, img_size, img_size] in [0, 1], label)`` (an ImageNet tree does not fit in memory);
- ``labels``: int64 ``[N]`` (for ``imagefolder`` too: they come from the folder scan);
- ``meta``: ``num_classes``, ``img_size``, ``in_chans``, ``mean``, ``std`` (the dataset's
  per-channel statistics, see ``dataset_mean_std``), ``source`` (where the data came from),
  ``sha256`` (of each file read, or of a description where hashing the data is impractical),
  ``split``, ``num_images``.

Resizing to a model's input size and normalising happen per batch (``prepare``), so that
CIFAR at 224 px (DeiT fine-tuning) does not hold 50 000 upsampled images in memory.

Datasets
- ``fashion_mnist``: the IDX files (gzipped or not), parsed here with numpy; default root
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
Splits: ``test``; ``val``, held out of the training files (within each class every 12th image);
``train``, the rest of the training files. Recipes are chosen on ``val``, never on ``test``.

- ``digits``: scikit-learn's ``load_digits`` (ships inside the wheel, 1797 8x8 images,
  values 0..16 scaled to [0, 1]); a fixed split without randomness: within each class, in
  the order scikit-learn gives, every fifth image (positions 4, 9, 14, ...) is test
  (355 test, 1442 train).
- ``cifar10`` / ``cifar100``: the "python version" batches (``data_batch_1..5`` and
  ``test_batch``; ``train`` and ``test`` for CIFAR-100) from ``root`` or its
  ``cifar-10-batches-py`` / ``cifar-100-python`` subfolder. These files are pickles; they
  are read with an unpickler that accepts nothing but plain containers and numpy arrays
  (any other global in the file is refused), so a tampered file cannot run code.
  CIFAR-100 uses the fine labels (100 classes).
- ``imagefolder``: an ImageNet-style tree ``root/train/<class>/*`` and ``root/val/<class>/*``
  (split ``test`` reads ``val/``, or ``test/`` if there is no ``val/``); classes are the
  sorted folder names (torchvision's ImageFolder); each image is resized (shorter side to
  img_size/0.875, bicubic) and centre-cropped to ``img_size``, RGB (timm's evaluation transform).

Missing data raises ``PriError(option, ...)`` naming where it was looked for and how to get
it; ``option`` is the name printed (``--data-root`` for the CLI, a config key for a workflow).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F

from pri.errors import PriError

DATASETS = ("fashion_mnist", "digits", "cifar10", "cifar100", "imagefolder")
DEFAULT_ROOTS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
SPLITS = ("train", "val", "test")
# the validation split: within each class of the training files, every VAL_EVERY-th image (positions
# VAL_EVERY - 1, 2 * VAL_EVERY - 1, ...); "train" is the rest. Recipes are chosen on it, never on test.
VAL_EVERY = 12

# Per-channel statistics of the training split (pixel values in [0, 1]).
_MEAN_STD = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "digits": ((0.3053,), (0.3760,)),  # over all 1797 images (load_digits / 16)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
}
_INFO = {  # num_classes, img_size, in_chans
    "fashion_mnist": (10, 28, 1),
    "digits": (10, 8, 1),
    "cifar10": (10, 32, 3),
    "cifar100": (100, 32, 3),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_HOW_TO_GET = {
    "fashion_mnist": "install the Debian package (apt-get install dataset-fashion-mnist, files land in "
                     "/usr/share/datasets/fashion-mnist) or put the four IDX files (e.g. train-images-idx3-ubyte.gz) "
                     "in one folder and point {option} at it",
    "cifar10": "download the CIFAR-10 'python version' (cifar-10-python.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and point {option} at the folder "
               "holding data_batch_1..5 and test_batch (or at its parent)",
    "cifar100": "download the CIFAR-100 'python version' (cifar-100-python.tar.gz from "
                "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and point {option} at the folder "
                "holding train and test (or at its parent)",
    "imagefolder": "point {option} at a folder with train/<class>/<image> and val/<class>/<image> "
                   "(the ImageNet layout, e.g. ILSVRC2012 train and val sorted into class folders)",
}


def _check_name(name: str, option: str = "--dataset") -> None:
    if name not in DATASETS:
        raise PriError(option, f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def _check_split(split: str) -> None:
    if split not in SPLITS:  # an internal call's mistake, not a user's option
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")


def dataset_mean_std(name: str) -> tuple[tuple, tuple]:
    """Per-channel (mean, std) of ``name``'s training images in [0, 1] (ImageNet's for imagefolder)."""
    _check_name(name)
    m, s = _MEAN_STD[name]
    return tuple(m), tuple(s)


def dataset_info(name: str) -> dict:
    """num_classes, img_size, in_chans of a dataset without reading it (None where they depend on the data)."""
    _check_name(name)
    nc, size, ch = _INFO.get(name, (None, None, 3))
    mean, std = dataset_mean_std(name)
    return {"num_classes": nc, "img_size": size, "in_chans": ch, "mean": list(mean), "std": list(std)}


def _missing(name: str, split: str, looked: list[str], option: str, detail: str = "") -> PriError:
    how = _HOW_TO_GET.get(name, "").format(option=option)
    where = "; ".join(looked)
    return PriError(option, f"{name} {split} data not found (looked for {where}){detail}; {how}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Parse the bytes of an IDX file (magic 0x0000TTNN: type TT, NN dimensions, big-endian sizes)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{what}: not an IDX file (bad magic {data[:4].hex()})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{what}: unknown IDX element type 0x{code:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{what}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(shape))
    need = 4 + 4 * ndim + count * dtype.itemsize
    if len(data) != need:
        raise ValueError(f"{what}: IDX header says {shape} of {dtype} ({need} bytes) but the file has {len(data)} bytes")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=4 + 4 * ndim).reshape(shape)
    return arr.astype(dtype.newbyteorder("=")) if dtype.byteorder == ">" else arr.copy()


def read_idx(path: str) -> tuple[np.ndarray, str]:
    """An IDX file (``.gz`` or plain) -> (array, sha256 of the file as stored)."""
    with open(path, "rb") as f:
        raw = f.read()
    digest = sha256_bytes(raw)
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return parse_idx(data, path), digest


def _find_file(root: str, stems: list[str]) -> str | None:
    for stem in stems:
        for cand in (stem, stem + ".gz"):
            p = os.path.join(root, cand)
            if os.path.isfile(p):
                return p
    return None


def _load_fashion_mnist(root: str, split: str, option: str):
    prefix = "train" if split == "train" else "t10k"
    img_stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]
    lab_stems = [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]
    ip, lp = _find_file(root, img_stems), _find_file(root, lab_stems)
    if ip is None or lp is None:
        looked = [os.path.join(root, s + "[.gz]") for s, p in ((img_stems[0], ip), (lab_stems[0], lp)) if p is None]
        raise _missing("fashion_mnist", split, looked, option)
    try:
        imgs, ih = read_idx(ip)
        labs, lh = read_idx(lp)
    except (ValueError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise PriError(option, f"cannot read Fashion-MNIST {split} files in {root}: {e}") from e
    if imgs.ndim != 3 or labs.ndim != 1 or len(imgs) != len(labs):
        raise PriError(option, f"{ip} / {lp}: expected images [N, H, W] and labels [N], got {imgs.shape} and {labs.shape}")
    x = torch.from_numpy(imgs.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labs.astype(np.int64))
    nc = 10
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= nc):
        raise PriError(option, f"{lp}: labels outside 0..9")
    meta = {"num_classes": nc, "img_size": int(x.shape[-1]), "in_chans": 1,
            "source": f"IDX files {ip}, {lp}",
            "files": [os.path.abspath(ip), os.path.abspath(lp)],
            "sha256": {os.path.basename(ip): ih, os.path.basename(lp): lh},
            "class_names": list(FASHION_MNIST_CLASSES)}
    return x, y, meta


# ---------------------------------------------------------------------------------------------
# scikit-learn digits

def digits_split(target: np.ndarray) -> np.ndarray:
    """Boolean test mask: within each class, every fifth image (positions 4, 9, ...) in sklearn's order."""
    test = np.zeros(len(target), dtype=bool)
    for c in np.unique(target):
        pos = np.flatnonzero(target == c)
        test[pos[4::5]] = True
    return test


def _load_digits(split: str, option: str):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise PriError(option, "the digits dataset needs scikit-learn (pip install scikit-learn)") from e
    d = load_digits()
    data = np.asarray(d.images, dtype=np.float64)  # [1797, 8, 8], 0..16
    target = np.asarray(d.target, dtype=np.int64)
    test = digits_split(target)
    sel = test if split == "test" else ~test
    x = torch.from_numpy((data[sel] / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(target[sel])
    import sklearn

    digest = sha256_bytes(np.ascontiguousarray(data).tobytes() + np.ascontiguousarray(target).tobytes())
    meta = {"num_classes": 10, "img_size": 8, "in_chans": 1,
            "source": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}); "
                      "split: every 5th image of each class is test",
            "sha256": {"load_digits(images,target)": digest}}
    return x, y, meta


# ---------------------------------------------------------------------------------------------
# CIFAR (python pickle batches)

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2 (a pure data transform)
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Accepts plain containers, numbers, strings and numpy arrays; refuses every other global."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}: a CIFAR batch holds only numpy arrays "
                                     "and lists")


def read_cifar_batch(path: str) -> tuple[dict, str]:
    """One CIFAR python batch -> (dict with str keys, sha256 of the file)."""
    with open(path, "rb") as f:
        raw = f.read()
    obj = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR batch is a dict, found {type(obj).__name__}")
    out = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return out, sha256_bytes(raw)


def _cifar_dir(root: str, names: list[str], sub: str) -> str | None:
    for d in (root, os.path.join(root, sub)):
        if all(os.path.isfile(os.path.join(d, n)) for n in names):
            return d
    return None


def _cifar_names(name: str, split: str) -> tuple[list[str], str]:
    if name == "cifar10":
        return ([f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]), "cifar-10-batches-py"
    return (["train"] if split == "train" else ["test"]), "cifar-100-python"


def _load_cifar(name: str, root: str, split: str, option: str):
    names, sub = _cifar_names(name, split)
    label_key, nc = ("labels", 10) if name == "cifar10" else ("fine_labels", 100)
    d = _cifar_dir(root, names, sub)
    if d is None:
        looked = [os.path.join(root, "{" + ",".join(names) + "}"), os.path.join(root, sub, "...")]
        raise _missing(name, split, looked, option)
    xs, ys, hashes = [], [], {}
    for n in names:
        p = os.path.join(d, n)
        try:
            b, h = read_cifar_batch(p)
        except (pickle.UnpicklingError, ValueError, EOFError, OSError, AttributeError, TypeError) as e:
            raise PriError(option, f"cannot read CIFAR batch {p}: {e}") from e
        if "data" not in b or label_key not in b:
            raise PriError(option, f"{p}: missing 'data' or '{label_key}' (is this a {name} batch?)")
        data = np.asarray(b["data"])
        labels = np.asarray(b[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise PriError(option, f"{p}: expected uint8 data [N, 3072] and N labels, got {data.dtype} "
                           f"{data.shape} and {labels.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
        hashes[n] = h
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)
    y = torch.from_numpy(np.concatenate(ys))
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= nc):
        raise PriError(option, f"{name} labels outside 0..{nc - 1} in {d}")
    meta = {"num_classes": nc, "img_size": 32, "in_chans": 3,
            "source": f"CIFAR python batches in {d} ({', '.join(names)})",
            "files": [os.path.abspath(os.path.join(d, n)) for n in names], "sha256": hashes}
    return x, y, meta


# ---------------------------------------------------------------------------------------------
# ImageNet-style folders

def _imagefolder_split(root: str, split: str) -> str | None:
    cands = ["train"] if split == "train" else ["val", "test"]
    return next((os.path.join(root, c) for c in cands if os.path.isdir(os.path.join(root, c))), None)


class CorruptImage(Exception):
    """An image of an image folder that cannot be decoded; its message is one line naming the file."""


def read_image(path: str):
    """torchvision's image loader (PIL, RGB), failing with CorruptImage in one line that names the file
    and what is wrong instead of PIL's traceback wherever the file is first read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error ... by format
        what = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, UnidentifiedImageError):
            what = "an empty file" if os.path.getsize(path) == 0 else "not a known image format, or a damaged header"
        raise CorruptImage(f"{path}: not a readable image ({what}); replace or remove the file") from None


def corrupt_image_line(e: Exception) -> str:
    """The one line of a CorruptImage, also when a DataLoader worker re-raised it with its traceback."""
    prefix = f"{CorruptImage.__module__}.{CorruptImage.__qualname__}: "
    lines = [ln[len(prefix):] for ln in str(e).splitlines() if ln.startswith(prefix)]
    return lines[-1] if lines else str(e).strip().splitlines()[-1]


class _UnitFloat:
    """timm's un-normalised transform yields uint8 [C, H, W]; the suite's images are float in [0, 1]."""

    def __init__(self, tf):
        self.tf = tf

    def __call__(self, img):
        return self.tf(img).float().div_(255.0)


def _load_imagefolder(root: str, split: str, option: str, img_size: int):
    """torchvision's ImageFolder with timm's evaluation transform (resize to img_size / 0.875 with
    bicubic interpolation, centre crop, no normalisation: the suite normalises per batch)."""
    from timm.data.transforms_factory import transforms_imagenet_eval
    from torchvision.datasets import ImageFolder

    d = _imagefolder_split(root, split)
    if d is None:
        cands = ["train"] if split == "train" else ["val", "test"]
        raise _missing("imagefolder", split, [os.path.join(root, c) + "/<class>/" for c in cands], option)
    tf = _UnitFloat(transforms_imagenet_eval(img_size=int(img_size), crop_pct=0.875, interpolation="bicubic",
                                             normalize=False))
    try:
        ds = ImageFolder(d, transform=tf, loader=read_image)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders, or no image in them
        raise _missing("imagefolder", split, [d + "/<class>/<image>"], option, " (no images in class folders)") from e
    listing = hashlib.sha256("".join(f"{os.path.relpath(p, d)}\t{c}\n" for p, c in ds.samples).encode())
    meta = {"num_classes": len(ds.classes), "img_size": int(img_size), "in_chans": 3,
            "source": f"image folders under {d} ({len(ds)} images, {len(ds.classes)} classes; resize "
                      f"{int(int(img_size) / 0.875)} bicubic, centre crop {int(img_size)})",
            "sha256": {"listing(relpath,class)": listing.hexdigest()},
            "class_names": list(ds.classes)}
    return ds, torch.tensor(ds.targets, dtype=torch.int64), meta


def check_dataset(name: str, root: str | None, split: str, option: str = "--data-root") -> None:
    """Raise PriError (naming ``option``) unless ``split`` of ``name`` is where it should be. Only
    looks for the files (no image is read): cheap enough for every plan and dry run."""
    _check_name(name, option)
    _check_split(split)
    split = "test" if split == "test" else "train"
    if name == "digits":
        return
    root = _root(name, root, split, option)
    if name == "fashion_mnist":
        prefix = "train" if split == "train" else "t10k"
        stems = {"images": [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"],
                 "labels": [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]}
        looked = [os.path.join(root, v[0] + "[.gz]") for v in stems.values() if _find_file(root, v) is None]
        if looked:
            raise _missing(name, split, looked, option)
    elif name in ("cifar10", "cifar100"):
        names, sub = _cifar_names(name, split)
        if _cifar_dir(root, names, sub) is None:
            raise _missing(name, split, [os.path.join(root, "{" + ",".join(names) + "}"), os.path.join(root, sub, "...")],
                           option)
    else:
        d = _imagefolder_split(root, split)
        if d is None or not any(e.is_dir() for e in os.scandir(d)):
            cands = ["train"] if split == "train" else ["val", "test"]
            raise _missing(name, split, [os.path.join(root, c) + "/<class>/" for c in cands], option)


# ---------------------------------------------------------------------------------------------

def load_dataset(name: str, root: str | None = None, split: str = "train", option: str = "--data-root",
                 img_size: int = 224):
    """(images, labels, meta) of ``split`` of ``name``; see the module docstring.

    ``option`` is the option or config key named in errors about missing data; ``img_size``
    is used by ``imagefolder`` only (the others come at their native size).
    """
    _check_name(name)
    _check_split(split)
    files = "test" if split == "test" else "train"
    if name != "digits":
        root = _root(name, root, split, option)
    x, y, meta = _read_files(name, root, files, option, int(img_size))
    meta = dict(meta)
    if files == "train":
        held = holdout_mask(y)
        keep = torch.nonzero(held if split == "val" else ~held).flatten()
        x = x[keep] if isinstance(x, torch.Tensor) else torch.utils.data.Subset(x, keep.tolist())
        y = y[keep]
        meta["source"] += f"; {split} part: {'every' if split == 'val' else 'all but every'} {VAL_EVERY}th image of each class"
    mean, std = dataset_mean_std(name)
    meta.update(name=name, split=split, num_images=int(len(y)), mean=list(mean), std=list(std))
    return x, y, meta


def _root(name: str, root: str | None, split: str, option: str) -> str:
    """The dataset's folder: ``root``, or the dataset's default location; a clear error if absent."""
    if root is None:
        root = DEFAULT_ROOTS.get(name)
        if root is None:
            raise _missing(name, split, [f"no {option} given"], option)
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise _missing(name, split, [f"{root} (no such folder)"], option)
    return root


def for_teacher(teacher, dataset: str | None, root: str | None, split: str, limit: int | None = None,
                teacher_path: str = "the teacher"):
    """``(name, images, labels, meta)`` of a split of the dataset a teacher was trained on (``dataset``
    if given, else the one its checkpoint records), at the teacher's input size, checked against
    its classes; ``limit``: only the first so many images (smoke tests)."""
    name, recorded = dataset, teacher_dataset(teacher)
    if name is None:
        name = recorded
        if name is None:
            raise PriError("--dataset", f"{teacher_path} does not record its dataset: pass --dataset")
    elif recorded is not None and name != recorded:
        raise PriError("--dataset", f"{teacher_path} was trained on {recorded}, not {name}: give --dataset {recorded} "
                       "or leave it out (the teacher's own is the default)")
    _check_name(name)
    x, y, meta = load_dataset(name, root, split, img_size=int(teacher.model.patch_embed.img_size[0]))
    if int(meta["num_classes"]) != teacher.num_classes:
        raise PriError("--dataset", f"{name} has {meta['num_classes']} classes, the teacher {teacher.num_classes}")
    if limit is not None:
        sel = torch.arange(min(limit, len(y)))
        x = x[sel] if isinstance(x, torch.Tensor) else torch.utils.data.Subset(x, sel.tolist())
        y = y[sel]
    return name, x, y, meta


def teacher_dataset(teacher) -> str | None:
    """The dataset a teacher's checkpoint records (its training recipe, or the test set it was
    evaluated on), or None for a checkpoint that does not say."""
    trained = teacher.provenance.get("trained") or {}
    return (trained.get("recipe") or {}).get("dataset") or (trained.get("test") or {}).get("name")


_CACHE: dict = {}


def _read_files(name: str, root: str | None, files: str, option: str, img_size: int):
    """The training or test files of a dataset, read once per process (``pri batch`` runs many
    commands on the same data); callers never modify the tensors in place."""
    key = (name, root, files, img_size if name == "imagefolder" else None)
    if key not in _CACHE:
        if name == "digits":
            _CACHE[key] = _load_digits(files, option)
        elif name == "fashion_mnist":
            _CACHE[key] = _load_fashion_mnist(root, files, option)
        elif name in ("cifar10", "cifar100"):
            _CACHE[key] = _load_cifar(name, root, files, option)
        else:
            _CACHE[key] = _load_imagefolder(root, files, option, img_size)
    return _CACHE[key]


def holdout_mask(labels: torch.Tensor) -> torch.Tensor:
    """The validation images of a training split: within each class, in file order, every
    VAL_EVERY-th image."""
    held = torch.zeros(len(labels), dtype=torch.bool)
    for c in torch.unique(labels):
        pos = torch.nonzero(labels == c).flatten()
        held[pos[VAL_EVERY - 1::VAL_EVERY]] = True
    return held


def prepare(x: torch.Tensor, img_size: int | None, mean, std) -> torch.Tensor:
    """Images in [0, 1] -> the model's input: bilinear resize to ``img_size`` if needed, then normalise."""
    if img_size is not None and (x.shape[-2] != img_size or x.shape[-1] != img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1]:
        if x.shape[1] == 1 and m.shape[1] > 1:
            x = x.expand(-1, m.shape[1], -1, -1)
        elif m.shape[1] != 1:  # one mean and std for every channel broadcast as they are
            raise ValueError(f"images have {x.shape[1]} channels, normalisation has {m.shape[1]}")
    return (x - m) / s


def batches(images, labels: torch.Tensor, batch: int, order: torch.Tensor | None = None, num_workers: int = 0,
            option: str = "--data-root"):
    """Yield (x float [B, C, H, W] in [0, 1], y int64) from a tensor or a lazy Dataset, in ``order``; an
    image that cannot be decoded raises PriError(option) in one line naming the file."""
    n = len(labels)
    order = torch.arange(n) if order is None else order
    if isinstance(images, torch.Tensor):
        for i in range(0, len(order), batch):
            sel = order[i:i + batch]
            yield images[sel], labels[sel]
        return
    sub = torch.utils.data.Subset(images, order.tolist())
    loader = torch.utils.data.DataLoader(sub, batch_size=batch, shuffle=False, num_workers=num_workers)
    try:
        for x, y in loader:
            yield x, torch.as_tensor(y, dtype=torch.int64)
    except CorruptImage as e:
        raise PriError(option, corrupt_image_line(e)) from None


def normalise(u8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 images (a pool's) as the float input a model with this mean and std takes."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=u8.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=u8.device).view(1, -1, 1, 1)
    return (u8.float() / 255.0 - m) / s
