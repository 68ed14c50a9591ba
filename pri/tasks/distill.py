"""Data-free knowledge distillation from synthetic pools; top-1 of the student on the real test set.

A pool (written by ``pri invert``) holds uint8 images, their patch masks and target labels.
Only the patches of an image's mask (plus CLS) are fed to the teacher and to the student,
each patch with its own position embedding (SMI's protocol, docs/methods.md "Feeding sparse images
downstream"); pixels outside the mask are never read. A batch whose images keep different
numbers of patches is padded to the largest, the padding masked out of every attention.

Loss: ``KL(p_teacher^T || p_student^T) * T^2`` with ``p^T = softmax(logits / T)`` (Hinton's
distillation loss; the teacher's softened distribution is the target).

Every method gets the same budget, and a seed pairs them: ``--steps`` optimiser steps on the
first ``--images`` images of the pool(s) in an order drawn from the seed alone (so image i of
every method's pool is visited at the same steps, and pools of one seed hold the same labels per
image), the same student initialisation and the same augmentations. ``--kd-runs R`` distils R
students from the pool (seeds derived from ``--seed`` and the run) and reports their mean top-1,
which averages out the students' own training noise. The headline is the test top-1 after the
last step; with ``--eval-every`` the intermediate evaluations are kept as a history (on the
validation split held out of the training set with ``--val``, so that nothing is selected on the
test set).

For claim 7 the teacher's max-softmax confidence on every synthetic image (masked forward) is
recorded, with its 1-Wasserstein and KS distances to the teacher's confidence on the real test set.

The steps, in order: check the options, load the pools, load the teacher, select the images,
load the real data, the teacher's passes, then per run: build the student, train, evaluate; write.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import MISSING, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from pri.core.runtime import progress as progress_bar
from pri.errors import PriError
from pri.options import add_runtime_options
from pri.tasks.probe import DEFAULTS as PROBE
from pri.files.data import normalise
from pri.files.io import input_path

# Defaults for a from-scratch student on a few hundred to a few thousand synthetic images (CPU):
# AdamW with a short warm-up and cosine decay trains a random-init ViT far more reliably than SGD;
# T = 4 (Hinton-style) keeps the teacher's ranking of the wrong classes visible while the target
# still peaks on the inverted class. SMI's T = 20 suits a pretrained student whose head alone
# learns. The workflow's schema (distill.*) holds the same defaults; tests/workflow/test_defaults.py checks it.
@dataclass
class DistillConfig:
    """What a distillation job is asked (``pri distill``'s options, whose defaults are these): the
    pools, the teacher, the from-scratch students' recipe, the verdict student's settings."""
    pool: list
    teacher: str
    out: str | None = None
    teacher_model: str | None = None
    allow_other_teacher: bool = False
    student: str = "vit_femto_patch4_28"
    student_checkpoint: str | None = None
    head_only: bool = False
    dataset: str | None = None
    data_root: str | None = None
    images: int | None = None
    balance_unit: int | None = None
    classes: list | None = None
    steps: int = 600
    batch: int = 64
    kd_runs: int = 1
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup: int = 50
    temperature: float = 4.0
    grad_clip: float = 1.0
    augment: bool = False
    augment_shift: int = 1
    eval_every: int = 0
    seed: int = 0
    probe_runs: int = PROBE["runs"]
    probe_l2: float = PROBE["l2"]
    probe_temperature: float = PROBE["temperature"]
    val: bool = False
    limit_test: int | None = None
    eval_batch: int = 512
    threads: int | None = None
    device: str = "auto"
    amp: str = "auto"
    no_progress: bool = False
    student_out: str | None = None

    @classmethod
    def from_args(cls, args) -> "DistillConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass
class DistillResult:
    """What a distillation job measured: the metrics (every student's top-1 and KL, the verdict
    student's, the confidences, the provenance), the last from-scratch student with its
    normalisation (for --student-out) and the seconds (for the timing side file)."""
    metrics: dict
    student: torch.nn.Module | None
    student_mean: list | None
    student_std: list | None
    hyperparameters: dict
    pool_info: list
    timing: dict


DEFAULTS = {f.name: f.default for f in fields(DistillConfig) if f.default is not MISSING}
# precompute the teacher's outputs for every (image, augmentation) when that takes fewer teacher
# forwards than the training steps would, and fits in this many floats
PRECOMPUTE_MAX_FLOATS = 50_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pri.files.pool import add_balance_unit

    d = DEFAULTS
    p.add_argument("--pool", nargs="+", required=True, metavar="PATH",
                   help="pool file(s) written by pri invert (several are concatenated in the order given)")
    p.add_argument("--teacher", required=True, metavar="PATH",
                   help="the teacher: a suite checkpoint (pri teacher) or a state_dict fitting --teacher-model")
    p.add_argument("--teacher-model", default=None,
                   help="teacher architecture (default: the one recorded in the suite checkpoint or the pool)")
    p.add_argument("--allow-other-teacher", action="store_true",
                   help="allow a teacher whose sha256 differs from the one the pool was inverted from, or a pool "
                        "that does not record its teacher")
    p.add_argument("--student", default=d["student"], help="student architecture (a small suite ViT or a timm ViT)")
    p.add_argument("--student-checkpoint", default=None,
                   help="start the student from this checkpoint (e.g. ImageNet DeiT for SMI's protocol) instead of "
                        "random weights; 'hub': timm's pretrained weights for --student from the Hugging Face hub "
                        "(online, or its local cache)")
    p.add_argument("--head-only", action="store_true",
                   help="replace the student's head by a new linear head and train only it (SMI's protocol; "
                        "needs --student-checkpoint)")
    p.add_argument("--dataset", default=None,
                   help="real dataset whose test split scores the student (default: the teacher's training dataset "
                        "recorded in its checkpoint)")
    p.add_argument("--data-root", default=None, help="folder holding the real dataset (see pri teacher --data-root)")
    p.add_argument("--images", type=int, default=None,
                   help="synthetic images to use, balanced over the classes in whole trajectories (see "
                        "--balance-unit) in a seed-determined order (default: all, in that order); give every method "
                        "the same value")
    add_balance_unit(p, "--images")
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="C",
                   help="use only pool images inverted for these labels (e.g. one-class distillation); the student "
                        "is still evaluated on all classes")
    add_recipe_arguments(p)
    add_probe_arguments(p)
    add_run_arguments(p)


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The from-scratch (or --student-checkpoint) student's training recipe."""
    from pri.tasks.train import OPTIMIZERS, SCHEDULES

    d = DEFAULTS
    p.add_argument("--steps", type=int, default=d["steps"], help="optimiser steps (the same for every method)")
    p.add_argument("--batch", type=int, default=d["batch"], help="batch size")
    p.add_argument("--kd-runs", type=int, default=d["kd_runs"],
                   help="students distilled from the pool, each from its own initialisation and data order; the "
                        "headline top-1 is their mean (0: none, the verdict student alone; needs --probe-runs >= 1)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"],
                   help="optimiser (SMI's protocol: sgd with --lr 0.1 --momentum 0.9 --weight-decay 1e-4)")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate")
    p.add_argument("--momentum", type=float, default=d["momentum"], help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help="weight decay (weight matrices only; not norms, biases, position embedding, CLS)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d["schedule"],
                   help="learning-rate schedule after the warm-up")
    p.add_argument("--warmup", type=int, default=d["warmup"], help="linear warm-up steps")
    p.add_argument("--temperature", type=float, default=d["temperature"],
                   help="distillation temperature T (SMI's protocol: 20)")
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"], help="clip the gradient norm (0 = off)")
    p.add_argument("--augment", action="store_true",
                   help="augment synthetic images during distillation: random roll by whole patches and horizontal "
                        "flip, the mask moving with the pixels (the inversion engine's augmentation)")
    p.add_argument("--augment-shift", type=int, default=d["augment_shift"],
                   help="with --augment: largest roll, in patches, along each axis")
    p.add_argument("--eval-every", type=int, default=d["eval_every"],
                   help="also evaluate every this many steps (0: only at the end), kept as a history")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed of image selection, data order, augmentation and student initialisation")


def add_probe_arguments(p: argparse.ArgumentParser) -> None:
    """The verdict student (pri/tasks/probe.py): a fixed random ViT backbone and a linear head fitted by KD."""
    from pri.tasks.probe import DEFAULTS as PD

    p.add_argument("--probe-runs", type=int, default=PD["runs"],
                   help="verdict-student heads fitted to the pool, each from its own random start (0: none); a "
                        "convex fit, so they agree: the headline is their mean (docs/methods.md, the verdict student)")
    p.add_argument("--probe-l2", type=float, default=PD["l2"],
                   help="the verdict student's L2 penalty on the head's weights (on standardised features)")
    p.add_argument("--probe-temperature", type=float, default=PD["temperature"],
                   help="the verdict student's distillation temperature T")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Evaluation, runtime and outputs."""
    p.add_argument("--val", action="store_true",
                   help="also evaluate on the validation split (held out of the training set): for choosing "
                        "recipes without looking at the test set")
    p.add_argument("--limit-test", type=int, default=None,
                   help="evaluate on only the first this many test (and validation) images (smoke tests; headlines "
                        "use all)")
    p.add_argument("--eval-batch", type=int, default=512, help="batch size of evaluations and teacher passes")
    add_runtime_options(p, amp=True)
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--student-out", default=None, help="also write the (last run's) student as a suite checkpoint")


# ---------------------------------------------------------------------------------------------
# statistics

def summarize(values, bins: int = 20) -> dict:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return {"n": 0}
    qs = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    hist, edges = np.histogram(v, bins=bins, range=(0.0, 1.0))
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()),
            "quantiles": {str(q): float(np.quantile(v, q)) for q in qs},
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in hist]}}


def ledger_summary(ledger: dict, max_len: int = 64) -> dict:
    """The ledger's small entries (method, schedule parameters, ...): long per-iteration series are left out."""
    out = {}
    for k, v in ledger.items():
        if isinstance(v, torch.Tensor):
            if v.numel() <= max_len:
                out[k] = v.tolist()
        elif isinstance(v, (list, tuple)):
            if len(v) <= max_len:
                out[k] = list(v)
        elif isinstance(v, dict):
            out[k] = ledger_summary(v, max_len)
        else:
            out[k] = v
    return out


class EpochOrder:
    """Batches of consecutive indices of a fresh permutation of 0..M-1 per epoch (the last batch of
    an epoch may be smaller), drawn from ``gen`` only: pools of one seed with the same M are
    visited in the same order whatever their images."""

    def __init__(self, m: int, batch: int, gen: torch.Generator):
        self.m, self.batch, self.gen = m, batch, gen
        self.queue = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        if len(self.queue) == 0:
            self.queue = torch.randperm(self.m, generator=self.gen)
        b, self.queue = self.queue[:self.batch], self.queue[self.batch:]
        return b


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits.float() / T, -1), F.log_softmax(teacher_logits.float() / T, -1),
                    reduction="batchmean", log_target=True) * (T * T)


# ---------------------------------------------------------------------------------------------
# the steps

@dataclass
class Synthetic:
    """The synthetic images a student learns from, in the order they were selected."""
    images: torch.Tensor  # uint8 [M, C, H, W]
    masks: torch.Tensor  # bool [M, N]
    labels: torch.Tensor  # int64 [M]
    available: int  # images of the pools (after --classes)
    pool_info: list
    order: torch.Tensor  # the selected images' positions in the concatenated pools
    histogram: dict | None = None  # images per class of a balanced selection (--images)


def check_options(args) -> None:
    from pri import checks
    from pri.checks import option_of

    for opt in ("steps", "batch", "eval_batch"):
        checks.integer(getattr(args, opt), option_of(opt), 1)
    checks.fits_memory(args.batch, "--batch")
    if args.kd_runs < 0 or (args.kd_runs == 0 and args.probe_runs == 0):
        raise PriError("--kd-runs", f"must be >= 1, or 0 with --probe-runs >= 1 (the verdict student alone), got "
                       f"{args.kd_runs} with --probe-runs {args.probe_runs}")
    if args.kd_runs == 0 and args.student_out:
        raise PriError("--student-out", "--kd-runs 0 trains no student to write: give --kd-runs 1 or drop --student-out")
    for opt in ("images", "limit_test"):
        if getattr(args, opt) is not None:
            checks.integer(getattr(args, opt), option_of(opt), 1)
    if args.images is not None:
        checks.fits_memory(args.images, "--images")
    for opt in ("probe_runs", "warmup", "eval_every", "augment_shift"):
        checks.integer(getattr(args, opt), option_of(opt), 0)
    for opt in ("lr", "temperature", "probe_temperature"):
        checks.positive(getattr(args, opt), option_of(opt))
    for opt in ("probe_l2", "weight_decay", "momentum", "grad_clip"):
        checks.non_negative(getattr(args, opt), option_of(opt))
    if args.head_only and not args.student_checkpoint:
        raise PriError("--head-only", "training only a new head needs a pretrained student: give --student-checkpoint")
    from pri.checks import seed as check_seed
    from pri.files.io import check_distinct, check_writable

    check_seed(args.seed)
    check_distinct({"--out": args.out, "--student-out": args.student_out},
                   {"--teacher": args.teacher, "--pool": args.pool, "--student-checkpoint": args.student_checkpoint})
    check_writable(args.out, "--out")
    if args.student_out:
        check_writable(args.student_out, "--student-out")


def load_pools(paths: list[str]) -> tuple[list[dict], list[dict]]:
    """The pools and, per pool, its provenance (pri.files.io.input_path, sha256, images, the ledger's
    small entries)."""
    from pri.files.models import sha256_file
    from pri.files.pool import load_pool

    pools = [load_pool(p) for p in paths]
    info = [{"path": input_path(path), "sha256": sha256_file(path), "images": int(len(pool["labels"])),
             "ledger": ledger_summary({k: v for k, v in pool["ledger"].items() if k != "teacher"})}
            for path, pool in zip(paths, pools)]
    shapes = {tuple(p["images"].shape[1:]) for p in pools}
    ns = {int(p["masks"].shape[1]) for p in pools}
    if len(shapes) != 1 or len(ns) != 1:
        raise PriError("--pool", f"pools differ in image shape or patch count: {sorted(shapes)}, {sorted(ns)}")
    return pools, info


def load_teacher(args, pools: list[dict], device):
    """The teacher, checked against the pools it must have produced."""
    from pri.core.vit import num_patches
    from pri.files.models import load_model, read_checkpoint
    from pri.files.pool import check_teacher

    name = args.teacher_model
    if name is None:
        obj = read_checkpoint(args.teacher, "--teacher")
        name = obj.get("arch") if isinstance(obj.get("arch"), str) else None
        name = name or next(((p["ledger"].get("teacher") or {}).get("model") for p in pools
                             if (p["ledger"].get("teacher") or {}).get("model")), None)
        del obj
        if name is None:
            raise PriError("--teacher-model", f"{args.teacher} does not record its architecture: pass --teacher-model")
    teacher = load_model(name, args.teacher, option="--teacher", frozen=True, model_option="--teacher-model")
    teacher.model.to(device).eval()
    for path, pool in zip(args.pool, pools):
        check_teacher(path, pool, teacher, args.teacher, allow_other=args.allow_other_teacher)
    m = teacher.model
    t_img, t_ch, n = int(m.patch_embed.img_size[0]), int(m.patch_embed.proj.in_channels), num_patches(m)
    C, H, W = pools[0]["images"].shape[1:]
    if (C, H, W) != (t_ch, t_img, t_img) or pools[0]["masks"].shape[1] != n:
        raise PriError("--pool", f"pool images are {C}x{H}x{W} with {pools[0]['masks'].shape[1]} patches; the teacher "
                       f"takes {t_ch}x{t_img}x{t_img} with {n} patches")
    for pool in pools:
        labels = pool["labels"]
        if int(labels.min()) < 0 or int(labels.max()) >= teacher.num_classes:
            raise PriError("--pool", f"pool labels outside 0..{teacher.num_classes - 1} (the teacher's classes)")
    return teacher


def select_images(args, pools: list[dict], info: list[dict], num_classes: int) -> Synthetic:
    """``--images`` images (of ``--classes``) of the pools, balanced over the classes in whole
    trajectories, in an order whose labels depend on the seed alone (pri.files.pool.balanced_order); all
    of them in a seed-drawn order when ``--images`` is not given."""
    from pri.core.runtime import derive_seed
    from pri.files.pool import balanced_order, check_unit, class_histogram, images_per_trajectory, trajectory_ids

    labels_all, traj = torch.cat([p["labels"] for p in pools]), trajectory_ids(pools)
    classes = range(num_classes) if args.classes is None else sorted(set(args.classes))
    if args.classes is not None:
        bad = [c for c in args.classes if not 0 <= c < num_classes]
        if bad:
            raise PriError("--classes", f"{bad} outside the teacher's classes 0..{num_classes - 1}")
        if not torch.isin(labels_all, torch.tensor(classes)).any():
            raise PriError("--classes", f"the pool(s) hold no images of classes {args.classes}")
    keep = torch.nonzero(torch.isin(labels_all, torch.tensor(list(classes)))).flatten()
    hist = None
    if args.images is None:
        gen = torch.Generator().manual_seed(derive_seed(args.seed, "images"))
        order = keep[torch.randperm(len(keep), generator=gen)]
    else:
        per_traj = images_per_trajectory(traj)
        unit = per_traj if args.balance_unit is None else args.balance_unit
        check_unit(args.images, unit, per_traj, "--images")
        if args.images > len(keep):
            what = f" of classes {args.classes}" if args.classes is not None else ""
            raise PriError("--images", f"asked for {args.images} images but the pool(s) hold only {len(keep)}{what}; "
                           "invert more images or lower --images (use the same value for every method)")
        hist = class_histogram(args.images, unit, classes, args.seed)
        order = balanced_order(labels_all, traj, hist, args.seed, "--images")
    images = torch.cat([p["images"] for p in pools])[order]
    masks = torch.cat([p["masks"] for p in pools])[order]
    return Synthetic(images, masks, labels_all[order], len(keep), info, order, hist)


def load_real(args, teacher, split: str):
    from pri.files.data import for_teacher

    return for_teacher(teacher, args.dataset, args.data_root, split, args.limit_test, args.teacher)


def build_student(args, teacher, device, run: int):
    """The student (random init from the seed and run, or a checkpoint with a new head) and its provenance."""
    from pri.core.runtime import derive_seed
    from pri.core.vit import grid_size, patch_size
    from pri.files.models import HUB, build_model, hub_checkpoint, load_model

    tm = teacher.model
    t_img, t_ch = int(tm.patch_embed.img_size[0]), int(tm.patch_embed.proj.in_channels)
    init_seed = derive_seed(args.seed, "student", run)
    torch.manual_seed(init_seed)
    if args.student_checkpoint:
        hub_id, path = None, args.student_checkpoint
        if path == HUB:
            path, hub_id = hub_checkpoint(args.student, "--student-checkpoint")
        st = load_model(args.student, path, img_size=t_img, option="--student-checkpoint", frozen=False,
                        model_option="--student")
        model, mean, std = st.model, list(st.mean), list(st.std)
        prov = dict(st.provenance, **({"hub_id": hub_id} if hub_id else {}))
        new_head = args.head_only or st.num_classes != teacher.num_classes
        if new_head:
            model.reset_classifier(teacher.num_classes)
        prov["new_head"] = bool(new_head)
    else:
        model = build_model(args.student, num_classes=teacher.num_classes, img_size=t_img, in_chans=t_ch,
                            option="--student")
        mean, std = list(teacher.mean), list(teacher.std)
        prov = {"model": args.student, "init": "random", "sha256": "random-init"}
    prov["init_seed"] = init_seed
    if grid_size(model) != grid_size(tm) or patch_size(model) != patch_size(tm):
        raise PriError("--student", f"{args.student} has a {grid_size(model)} grid of {patch_size(model)}-px patches; "
                       f"the teacher {grid_size(tm)} of {patch_size(tm)}-px: masks must mean the same patches")
    if int(model.patch_embed.proj.in_channels) != t_ch:
        raise PriError("--student", f"{args.student} takes {model.patch_embed.proj.in_channels} channels, the pool {t_ch}")
    if args.head_only:
        model.requires_grad_(False)
        model.get_classifier().requires_grad_(True)
    model.to(device)
    prov.update(trainable_params=int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
                params=int(sum(p.numel() for p in model.parameters())))
    return model, mean, std, prov


@torch.no_grad()
def teacher_logits(teacher, images: torch.Tensor, masks: torch.Tensor, device, amp: bool, batch: int) -> torch.Tensor:
    """The teacher's logits on synthetic images, masked patches only (padded batches)."""
    from pri.core.vit import padded_index, sparse_forward

    out = torch.empty(len(images), teacher.num_classes, dtype=torch.float32)
    order = torch.argsort(masks.sum(1), stable=True)  # similar sizes together: little padding
    for i in range(0, len(order), batch):
        b = order[i:i + batch]
        idx, valid = padded_index(masks[b].to(device))
        x = normalise(images[b].to(device), teacher.mean, teacher.std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out[b] = sparse_forward(teacher.model, x, idx, valid=valid).float().cpu()
    return out


class TeacherTargets:
    """The teacher's logits for an image under an augmentation: all of them computed once when that
    is cheaper than a teacher forward per step, else on the fly (the same numbers either way, up to
    floating-point order)."""

    def __init__(self, teacher, syn: Synthetic, aug, steps: int, batch: int, device, amp: bool, eval_batch: int):
        self.teacher, self.syn, self.aug, self.device, self.amp = teacher, syn, aug, device, amp
        m, a, k = len(syn.labels), (len(aug) if aug is not None else 1), teacher.num_classes
        self.table = None
        if aug is None:
            self.table = teacher_logits(teacher, syn.images, syn.masks, device, amp, eval_batch).unsqueeze(1)
        elif m * a <= steps * batch and m * a * k <= PRECOMPUTE_MAX_FLOATS:
            self.table = torch.empty(m, a, k)
            for c in range(a):
                combo = torch.full((m,), c, dtype=torch.long)
                self.table[:, c] = teacher_logits(teacher, aug.apply_each(syn.images, combo),
                                                  aug.move_masks(syn.masks, combo), device, amp, eval_batch)
        self.precomputed = self.table is not None

    def __call__(self, b: torch.Tensor, combo: torch.Tensor | None, x: torch.Tensor, idx, valid) -> torch.Tensor:
        from pri.core.vit import sparse_forward

        if self.table is not None:
            return self.table[b, combo if combo is not None else 0].to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return sparse_forward(self.teacher.model, normalise(x, self.teacher.mean, self.teacher.std), idx,
                                  valid=valid).float()


def confidence(teacher, syn_logits: torch.Tensor, labels: torch.Tensor, real: np.ndarray | None) -> dict:
    """Claim 7: the teacher's max-softmax confidence on every synthetic image (masked) and its
    distances to the teacher's confidence on the real test set (recorded by pri teacher)."""
    from scipy.stats import ks_2samp, wasserstein_distance

    syn = syn_logits.softmax(-1).max(-1).values.numpy().astype(np.float64)
    out = {"what": "teacher max-softmax probability (T = 1): synthetic images fed masked, real test images dense",
           "synthetic": summarize(syn), "synthetic_values": [round(float(v), 6) for v in syn],
           "synthetic_teacher_agreement": float((syn_logits.argmax(-1) == labels).float().mean())}
    if real is not None and len(real):
        out.update(real_test=summarize(real), wasserstein1=float(wasserstein_distance(syn, real)),
                   ks=float(ks_2samp(syn, real).statistic))
    return out


def real_confidence(teacher, test_x, test_y, device, amp, batch) -> np.ndarray:
    """The teacher's max-softmax confidence on the real test set: recorded in a suite checkpoint by
    pri teacher; computed here for other checkpoints."""
    rec = teacher.test_confidence
    if rec is not None and len(rec) == len(test_y):
        return rec.numpy().astype(np.float64)
    from pri.files.data import batches, prepare

    img = int(teacher.model.patch_embed.img_size[0])
    out = []
    with torch.no_grad():
        for x, _ in batches(test_x, test_y, batch):
            x = prepare(x.to(device), img, teacher.mean, teacher.std)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out.append(teacher.model(x).float().softmax(-1).max(-1).values.cpu())
    return torch.cat(out).numpy().astype(np.float64)


def train(args, run: int, model, norm, targets: TeacherTargets, syn: Synthetic, aug, device, amp: bool,
          evaluate_fn, progress: bool) -> dict:
    """``--steps`` KD steps; batches in the seed's order, padded to their largest mask."""
    from pri.core.runtime import derive_seed, sync
    from pri.core.vit import padded_index, sparse_forward
    from pri.tasks.train import lr_at, make_optimizer, set_lr

    opt = make_optimizer(model, args.optimizer, args.lr, args.weight_decay, args.momentum)
    order = EpochOrder(len(syn.labels), args.batch, torch.Generator().manual_seed(derive_seed(args.seed, "order", run)))
    g_aug = torch.Generator().manual_seed(derive_seed(args.seed, "augment", run))
    T, warmup = float(args.temperature), min(args.warmup, args.steps)

    def set_train_mode():
        if args.head_only:
            model.eval()
            model.get_classifier().train()
        else:
            model.train()

    history, loss_ema, tokens = [], None, 0
    set_train_mode()
    t0 = time.perf_counter()
    bar = progress_bar(args.steps, progress, f"distill {args.student} (run {run + 1}/{args.kd_runs})")
    for step in range(args.steps):
        b = order.next()
        xb, mb, combo = syn.images[b], syn.masks[b], None
        if aug is not None:
            combo = aug.draw(len(b), g_aug)
            xb, mb = aug.apply_each(xb, combo), aug.move_masks(mb, combo)
        xb, mb = xb.to(device), mb.to(device)
        idx, valid = padded_index(mb)
        tokens += int(idx.numel())
        tl = targets(b, combo, xb, idx, valid)
        set_lr(opt, lr_at(step, args.steps, warmup, args.lr, args.schedule))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            sl = sparse_forward(model, normalise(xb, *norm), idx, valid=valid)
        loss = kd_loss(sl, tl, T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.grad_clip)
        opt.step()
        if (step + 1) % 10 == 0 or step + 1 == args.steps:
            lv = float(loss.detach())
            loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
            bar.set_postfix(loss=f"{loss_ema:.4f}")
        bar.update(1)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            history.append({"step": step + 1, **evaluate_fn()})
            set_train_mode()
    bar.close()
    sync(device)
    return {"history": history, "loss_ema": loss_ema, "seconds": time.perf_counter() - t0,
            "patch_tokens_per_step": tokens / args.steps}


def scratch_runs(args, teacher, syn, aug, targets, real: dict, device, amp: bool, progress: bool) -> tuple:
    """``--kd-runs`` students trained by SGD (from scratch, or from --student-checkpoint), each scored
    on the test (and validation) split; returns their records and (the last student, its pixel mean, SD)."""
    from pri.tasks.probe import kl_to_teacher, teacher_real_logits
    from pri.tasks.train import evaluate

    t_img = int(teacher.model.patch_embed.img_size[0])
    test_x, test_y, test_sha = real["test"]
    runs, student, s_mean, s_std = [], None, None, None
    for r in range(args.kd_runs):
        student, s_mean, s_std, student_prov = build_student(args, teacher, device, r)

        def score(split: str) -> dict:
            x, y = real[split][:2]
            return evaluate(student, x, y, teacher.num_classes, t_img, s_mean, s_std, device, batch=args.eval_batch,
                            amp=amp)

        def evaluate_student(with_test=True) -> dict:
            out = {"top1": score("test")["top1"]} if with_test else {}
            return {**out, **({"val_top1": score("val")["top1"]} if real.get("val") else {})}

        tr = train(args, r, student, (s_mean, s_std), targets, syn, aug, device, amp, evaluate_student, progress)
        final = score("test")
        t_logits = teacher_real_logits(teacher, test_x, test_sha, device, args.eval_batch)
        val = {"val_top1": score("val")["top1"]} if real.get("val") else {}
        runs.append({"run": r, "top1": final["top1"], "top5": final["top5"], "per_class": final["per_class"],
                     "kl_teacher": kl_to_teacher(t_logits, final["logits"]), **val,
                     "history": tr["history"] + [{"step": args.steps, "top1": final["top1"], **val}],
                     "final_loss_ema": tr["loss_ema"], "train_seconds": tr["seconds"],
                     "patch_tokens_per_step": tr["patch_tokens_per_step"], "student": student_prov})
    return runs, (student, s_mean, s_std)


def hyperparameters(args, syn, targets, teacher, amp: bool) -> dict:
    hyper = {k: getattr(args, k) for k in ("steps", "batch", "kd_runs", "optimizer", "lr", "momentum", "weight_decay",
                                           "schedule", "warmup", "temperature", "grad_clip", "augment",
                                           "augment_shift", "eval_every", "head_only", "seed", "classes",
                                           "limit_test", "probe_runs", "probe_l2", "probe_temperature",
                                           "balance_unit")}
    hyper.update(images=len(syn.labels), amp_bf16=amp, loss="KL(softmax(t/T) || softmax(s/T)) * T^2, batchmean",
                 weight_decay_on="weight matrices only", feed="masked patches only (sparse_forward), CLS prepended, "
                 "batches padded to their largest mask with the padding masked out of attention",
                 image_order="--images balanced over the classes in whole trajectories, each label at the same "
                 "position for every method (pri.files.pool.balanced_order)" if syn.histogram is not None else
                 "all the pools' images in a permutation drawn from the seed",
                 class_histogram={str(c): k for c, k in sorted(syn.histogram.items())} if syn.histogram else None,
                 data_order="a permutation per epoch drawn from the seed and run (the same for every method)",
                 teacher_targets="precomputed for every (image, augmentation)" if targets.precomputed else "per step",
                 pixel_mean=list(teacher.mean), pixel_std=list(teacher.std))
    return hyper


def mean_of(runs: list[dict], key: str) -> float | None:
    return float(np.mean([r[key] for r in runs])) if runs else None


def run_metrics(args, runs, probe, syn, pool_info, teacher, conf, hyper, test_meta, device) -> dict:
    from pri.core.runtime import device_name, versions

    k = teacher.num_classes
    per_class = [None if not runs or any(r["per_class"][c] is None for r in runs) else
                 mean_of([{"v": r["per_class"][c]} for r in runs], "v") for c in range(k)]
    ledger0 = pool_info[0]["ledger"]
    return {
        "top1": mean_of(runs, "top1"), "top1_runs": [r["top1"] for r in runs], "top5": mean_of(runs, "top5"),
        "kl_teacher": mean_of(runs, "kl_teacher"),
        "headline": "top1: test top-1 after the last step, mean over the KD runs (the from-scratch arm); the "
                    "verdicts read probe.top1 (the verdict student) when present",
        **({"val_top1": mean_of(runs, "val_top1")} if runs and "val_top1" in runs[0] else {}),
        "per_class": per_class, "runs": runs, "steps": args.steps, "kd_runs": args.kd_runs,
        **({"probe": probe} if probe is not None else {}),
        "images": len(syn.labels), "images_available": syn.available,
        "classes": sorted(set(args.classes)) if args.classes is not None else None,
        "label_counts": torch.bincount(syn.labels, minlength=k).tolist(),
        "mask_sizes": {str(int(a)): int(b) for a, b in zip(*torch.unique(syn.masks.sum(1), return_counts=True))},
        "pools": pool_info, "method": ledger0.get("method"), "tag": ledger0.get("tag"), "pool_params": ledger0,
        "teacher": {"path": input_path(args.teacher), "provenance": teacher.provenance},
        "student": {"name": args.student, "provenance": runs[-1]["student"] if runs else None},
        "test": {"dataset": test_meta["dataset"], "source": test_meta["source"], "sha256": test_meta["sha256"],
                 "num_images": test_meta["num_images"]},
        "confidence": conf, "hyperparameters": hyper,
        "versions": versions(), "seed": args.seed, "device": device_name(device),
    }


def distill(cfg: DistillConfig) -> DistillResult:
    """The library function behind ``pri distill``: select the config's images from its pools,
    distil the from-scratch students and fit the verdict student, score them on the real test
    split. Writes nothing."""
    from pri.core.engine import Augment
    from pri.core.runtime import setup_runtime
    from pri.core.vit import patch_size
    from pri.tasks.probe import verdict_student

    t_start = time.perf_counter()
    device, amp = setup_runtime(cfg.threads, cfg.device, cfg.amp)
    pools, pool_info = load_pools(cfg.pool)
    teacher = load_teacher(cfg, pools, device)
    syn = select_images(cfg, pools, pool_info, teacher.num_classes)
    del pools
    ds_name, test_x, test_y, test_meta = load_real(cfg, teacher, "test")
    val = load_real(cfg, teacher, "val") if cfg.val else None
    real = {"test": (test_x, test_y, test_meta["sha256"]), "val": (val[1], val[2], val[3]["sha256"]) if val else None}
    H, W = syn.images.shape[-2:]
    aug = Augment(H, W, patch_size(teacher.model), 0.0, True, "cpu", shift=cfg.augment_shift) if cfg.augment else None

    t_teacher = time.perf_counter()
    targets = TeacherTargets(teacher, syn, aug, cfg.steps, cfg.batch, device, amp, cfg.eval_batch)
    logits_of = lambda x, m: teacher_logits(teacher, x, m, device, amp, cfg.eval_batch)  # noqa: E731
    plain = targets.table[:, 0] if targets.precomputed and aug is None else logits_of(syn.images, syn.masks)
    conf = confidence(teacher, plain, syn.labels, real_confidence(teacher, test_x, test_y, device, amp,
                                                                 cfg.eval_batch))
    teacher_seconds = time.perf_counter() - t_teacher

    runs, (student, s_mean, s_std) = scratch_runs(cfg, teacher, syn, aug, targets, real, device, amp,
                                                  not cfg.no_progress)
    t_probe = time.perf_counter()
    probe = verdict_student(cfg, teacher, syn, aug, targets.table, real, device, logits_of) if cfg.probe_runs else None
    probe_seconds = time.perf_counter() - t_probe
    report(cfg, syn, runs, probe, conf)

    hyper = hyperparameters(cfg, syn, targets, teacher, amp)
    metrics = run_metrics(cfg, runs, probe, syn, pool_info, teacher, conf, hyper,
                          {**test_meta, "dataset": ds_name, "num_images": int(len(test_y))}, device)
    train_runs = [r.pop("train_seconds") for r in runs]  # seconds go to the timing file: same work, same bytes
    timing = {"teacher_seconds": teacher_seconds, "train_seconds": sum(train_runs), "train_seconds_runs": train_runs,
              "probe_seconds": probe_seconds, "wall_seconds": time.perf_counter() - t_start}
    return DistillResult(metrics, student, s_mean, s_std, hyper, pool_info, timing)


def run(args) -> int:
    """``pri distill``: the options as a DistillConfig, checked; distill; the student (--student-out)
    and the metrics written."""
    from pri.files.io import atomic_write_json, with_timing
    from pri.files.models import save_checkpoint

    t_start = time.perf_counter()
    cfg = DistillConfig.from_args(args)
    check_options(cfg)
    res = distill(cfg)
    metrics = res.metrics
    if cfg.student_out:
        sprov = {"distilled": {k: metrics[k] for k in ("top1", "steps", "images", "method")},
                 "pools": res.pool_info, "hyperparameters": res.hyperparameters,
                 "student": metrics["student"]["provenance"]}
        metrics["student"]["checkpoint_sha256"] = save_checkpoint(cfg.student_out, res.student.cpu(), cfg.student,
                                                                  res.student_mean, res.student_std, sprov)
    atomic_write_json(cfg.out, metrics)
    with_timing(cfg.out, {**res.timing, "wall_seconds": time.perf_counter() - t_start})
    return 0


def report(args, syn, runs, probe, conf) -> None:
    each = ", ".join(f"{100 * r['top1']:.2f}" for r in runs)
    line = f"pri distill: {len(syn.labels)} synthetic images"
    if runs:
        line += (f"; {args.student}, {args.steps} steps x {args.kd_runs} run(s): test top-1 "
                 f"{100 * mean_of(runs, 'top1'):.2f}% (runs: {each})")
    if probe is not None:
        line += (f"; verdict student {100 * probe['top1']:.2f}% ({len(probe['runs'])} heads within "
                 f"{100 * probe['spread']:.2f} points)")
    print(line + f"; confidence W1 {conf.get('wasserstein1', float('nan')):.4f}", file=sys.stderr)
