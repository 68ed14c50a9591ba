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

from .errors import PriError

REQUIRED = ("images", "masks", "labels")


def load_pool(path: str, option: str = "--pool") -> dict:
    """Read and check a pool file; errors name ``option``. A file whose pickle would run code is
    refused (weights_only loading)."""
    from .io import safe_torch_load

    pool = safe_torch_load(path, option, what="pool file")
    if not isinstance(pool, dict) or any(k not in pool for k in REQUIRED):
        raise PriError(option, f"{path} is not a pool: it needs the keys {', '.join(REQUIRED)} (written by pri invert)")
    imgs, masks, labels = pool["images"], pool["masks"], pool["labels"]
    if not (isinstance(imgs, torch.Tensor) and imgs.dtype == torch.uint8 and imgs.ndim == 4):
        raise PriError(option, f"{path}: images must be uint8 [M, C, H, W]")
    if not (isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and masks.ndim == 2):
        raise PriError(option, f"{path}: masks must be bool [M, N]")
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
    pool["labels"] = labels.long()
    if not isinstance(pool.get("ledger"), dict):
        pool["ledger"] = {}
    return pool


def pool_teacher_sha(pool: dict) -> str | None:
    """The sha256 of the weights of the teacher a pool was inverted from (pri.io.weights_sha256),
    or, for a pool written before weights were hashed, of its file (``random-init`` for random
    weights); None when the pool does not say."""
    t = pool.get("ledger", {}).get("teacher") or {}
    return t.get("weights_sha256") or t.get("sha256")


def check_teacher(path: str, pool: dict, teacher, teacher_path: str, option: str = "--teacher",
                  allow_other: bool = False) -> None:
    """Refuse a pool inverted from another teacher than ``teacher`` (a pri.models.Teacher; or one
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
    from .io import weights_sha256

    if "weights_sha256" not in teacher.provenance:
        teacher.provenance["weights_sha256"] = weights_sha256(teacher.model)
    return teacher.provenance["weights_sha256"]
