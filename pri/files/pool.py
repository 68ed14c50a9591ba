"""Pool files: what ``pri invert`` writes and every downstream command reads.

A pool is one file, loadable with ``torch.load(path, weights_only=True)``: a dict with
``images`` (uint8 [M, C, H, W], pixels outside the mask exactly 0), ``masks`` (bool [M, N]),
``labels`` (int64 [M]), ``trajectory``, ``stage`` (int64 [M]), ``updates`` (int32 [M, N]: the
optimisation steps each kept patch received, 0 outside the mask) and a ``ledger`` (schedule,
active tokens per iteration, wall-clock, peak memory, device, versions, seed, teacher provenance).
"""
from __future__ import annotations

import os

import torch

from pri.errors import PriError

REQUIRED = ("images", "masks", "labels")


def load_pool(path: str, option: str = "--pool") -> dict:
    """Read and check a pool file; errors name ``option``. A file whose pickle would run code is
    refused (weights_only loading)."""
    from pri.files.io import safe_torch_load

    pool = safe_torch_load(path, option, what="pool file")
    if not isinstance(pool, dict) or any(k not in pool for k in REQUIRED):
        raise PriError(option, f"{path} is not a pool: it needs the keys {', '.join(REQUIRED)} (written by pri invert)")
    imgs, masks, labels = pool["images"], pool["masks"], pool["labels"]
    if not (isinstance(imgs, torch.Tensor) and imgs.dtype == torch.uint8 and imgs.ndim == 4):
        raise PriError(option, f"{path}: images must be uint8 [M, C, H, W], not {_describe(imgs)}")
    if not (isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and masks.ndim == 2):
        raise PriError(option, f"{path}: masks must be bool [M, N], not {_describe(masks)}")
    if not (isinstance(labels, torch.Tensor) and labels.ndim == 1):
        raise PriError(option, f"{path}: labels must be a 1-D tensor")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise PriError(option, f"{path}: labels must be integer class indices (int64), not {labels.dtype}; a pool "
                       "written by pri invert has int64 labels: write it again")
    if not (len(imgs) == len(masks) == len(labels)):
        raise PriError(option, f"{path}: {len(imgs)} images, {len(masks)} masks, {len(labels)} labels")
    if len(imgs) == 0:
        raise PriError(option, f"{path} holds no images: invert at least one (pri invert --batch)")
    if int(masks.sum(1).min()) < 1:
        raise PriError(option, f"{path}: an image has an empty mask")
    for key, shape in (("trajectory", (len(imgs),)), ("stage", (len(imgs),)), ("updates", tuple(masks.shape))):
        _check_integer(pool, key, shape, path, option)
    pool["labels"] = labels.long()
    if not isinstance(pool.get("ledger"), dict):
        pool["ledger"] = {}
    return pool


def _describe(t) -> str:
    return f"{t.dtype} {list(t.shape)}".replace("torch.", "") if isinstance(t, torch.Tensor) else type(t).__name__


def _check_integer(pool: dict, key: str, shape: tuple, path: str, option: str) -> None:
    """An optional per-image field of a pool: absent, or an integer tensor of ``shape``."""
    if key not in pool:
        return
    t, want = pool[key], " x ".join(str(n) for n in shape)
    if not isinstance(t, torch.Tensor):
        raise PriError(option, f"{path}: {key} must be an integer tensor [{want}], not {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise PriError(option, f"{path}: {key} must hold integers, not {t.dtype}; a pool written by pri invert "
                       "has integer fields: write it again")
    if tuple(t.shape) != shape:
        raise PriError(option, f"{path}: {key} has shape {list(t.shape)}, the pool's images need [{want}]")


def pool_teacher_sha(pool: dict) -> str | None:
    """The sha256 of the weights of the teacher a pool was inverted from (pri.core.runtime.weights_sha256),
    or, for a pool written before weights were hashed, of its file (``random-init`` for random
    weights); None when the pool does not say."""
    t = pool.get("ledger", {}).get("teacher") or {}
    return t.get("weights_sha256") or t.get("sha256")


def check_teacher(path: str, pool: dict, teacher, teacher_path: str, option: str = "--teacher",
                  allow_other: bool = False) -> None:
    """Refuse a pool inverted from another teacher than ``teacher`` (a pri.core.engine.Teacher; or one
    without a ledger saying which), unless ``allow_other``. The teacher's weights are compared, not
    its file: the same weights written by another run are the same teacher."""
    if allow_other:
        return
    sha = pool_teacher_sha(pool)
    if sha is None:
        raise PriError(option, f"{path} does not record the teacher it was inverted from (no ledger): pass "
                       "--allow-other-teacher to use it anyway")
    t = pool.get("ledger", {}).get("teacher") or {}
    if t.get("weights_sha256"):
        mine, what = teacher_weights_sha(teacher), "weights"
    else:
        mine, what = teacher.provenance.get("sha256"), "file"
    if sha != mine:
        raise PriError(option, f"{path} was inverted from a teacher whose {what} sha256 is {str(sha)[:12]}..., not "
                       f"{os.path.basename(teacher_path)}'s ({str(mine)[:12]}...); pass the pool's teacher or "
                       "--allow-other-teacher")


def teacher_weights_sha(teacher) -> str:
    """The weights sha256 of a loaded teacher (computed once, kept in its provenance)."""
    from pri.core.runtime import weights_sha256

    if "weights_sha256" not in teacher.provenance:
        teacher.provenance["weights_sha256"] = weights_sha256(teacher.model)
    return teacher.provenance["weights_sha256"]


def trajectory_ids(pools: list[dict]) -> torch.Tensor:
    """One id per image of the concatenated pools: the images of one PRI trajectory share it; a pool
    without a ``trajectory`` field counts every image as its own trajectory."""
    ids, base = [], 0
    for pool in pools:
        t = pool.get("trajectory")
        t = torch.arange(len(pool["labels"])) if not isinstance(t, torch.Tensor) else t.long()
        ids.append(base + t - (int(t.min()) if len(t) else 0))
        base = int(ids[-1].max()) + 1 if len(t) else base
    return torch.cat(ids)


def images_per_trajectory(traj: torch.Tensor, option: str = "--pool") -> int:
    """The images of every trajectory (PRI: v; DMI, SMI: 1); pools whose trajectories differ in length are refused."""
    sizes = set(torch.unique(traj, return_counts=True)[1].tolist())
    if len(sizes) != 1:
        raise PriError(option, f"the pool(s) hold trajectories of {sorted(sizes)} images: give pools of one schedule")
    return sizes.pop()


def class_histogram(n: int, unit: int, classes, seed: int) -> dict[int, int]:
    """Images per class of a balanced selection of ``n`` images: ``n / unit`` units of ``unit``
    images dealt to ``classes`` in an order drawn from ``seed`` alone, so that every pool selected with
    the same (n, unit, classes, seed) gets the same histogram, within one unit from class to class."""
    from pri.core.runtime import derive_seed

    cls = sorted(int(c) for c in classes)
    perm = torch.randperm(len(cls), generator=torch.Generator().manual_seed(derive_seed(seed, "class-order")))
    units = n // unit
    return {cls[int(j)]: unit * (units // len(cls) + (r < units % len(cls))) for r, j in enumerate(perm)}


def balanced_order(labels: torch.Tensor, traj: torch.Tensor, hist: dict, seed: int, option: str) -> torch.Tensor:
    """Positions of a selection with class histogram ``hist``, whole trajectories only, in an order
    whose label at every position depends on (hist, seed) alone: two pools selected alike see the
    same label at every step. A class short of images is refused naming ``option``."""
    from pri.core.runtime import derive_seed

    g = torch.Generator().manual_seed(derive_seed(seed, "trajectories"))
    chosen = {}
    for c in sorted(hist):
        if hist[c] == 0:
            continue
        idx = torch.nonzero(labels == c).flatten()
        ts = torch.unique(traj[idx])  # sorted
        rank = torch.empty(len(ts), dtype=torch.long)
        rank[torch.randperm(len(ts), generator=g)] = torch.arange(len(ts))
        idx = idx[torch.sort(rank[torch.searchsorted(ts, traj[idx])], stable=True).indices]  # whole trajectories
        if len(idx) < hist[c]:
            raise PriError(option, f"class {c} has {len(idx)} images in the pool(s), {hist[c]} are needed for a "
                           "balanced selection: lower it or invert more images")
        chosen[c] = idx[:hist[c]]
    seq = torch.cat([torch.full((k,), c) for c, k in sorted(hist.items()) if k])
    seq = seq[torch.randperm(len(seq), generator=torch.Generator().manual_seed(derive_seed(seed, "label-order")))]
    order = torch.empty(len(seq), dtype=torch.long)
    for c, idx in chosen.items():
        at = torch.nonzero(seq == c).flatten()
        order[at] = idx[torch.randperm(len(idx), generator=g)]
    return order


def check_unit(n: int, unit: int, per_traj: int, n_option: str, unit_option: str = "--balance-unit") -> None:
    """A balanced selection of ``n`` images in units of ``unit`` from trajectories of ``per_traj`` images."""
    from pri.checks import integer

    integer(unit, unit_option, lo=1)
    if unit % per_traj:
        raise PriError(unit_option, f"{unit} is not a multiple of the pool's {per_traj} images per trajectory: "
                       f"give a multiple of {per_traj} (the same for every method compared)")
    if n % unit:
        raise PriError(n_option, f"{n} images is not a whole number of {unit}-image units ({unit_option} {unit}); "
                       f"nearest that work: {nearest_multiples(n, unit)}")


def nearest_multiples(n: int, step: int) -> str:
    """The multiples of ``step`` next to ``n`` (not 0), in words: ``140 or 280``."""
    lo, hi = n // step * step, (n // step + 1) * step
    return f"{lo} or {hi}" if lo else f"{hi}"


def add_balance_unit(p, count: str, default_note: str = "") -> None:
    """The ``--balance-unit`` option of a command that selects ``count`` images from pools."""
    p.add_argument("--balance-unit", type=int, default=None, metavar="U",
                   help=f"{count} is dealt to the classes in units of U images (whole trajectories): give every method "
                        "compared the same U, a multiple of each one's images per trajectory (PRI: v), and they see the "
                        f"same class histogram (default: the pool's images per trajectory{default_note})")
