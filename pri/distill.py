"""Data-free knowledge distillation from synthetic pools; top-1 of the student on the real test set.

A pool (written by ``pri invert``) holds uint8 images, their patch masks and target labels.
Only the patches of an image's mask (plus CLS) are fed to the teacher and to the student,
each patch with its own position embedding (SMI's protocol, METHODS.md "Feeding sparse images
downstream"); pixels outside the mask are never read. Images in one batch must share the
mask size K, so images are bucketed by K and each batch is drawn from one bucket, chosen with
probability proportional to its size. Real test images are always fed dense.

Loss: ``KL(p_teacher^T || p_student^T) * T^2`` with ``p^T = softmax(logits / T)`` (Hinton's
distillation loss; the teacher's softened distribution is the target).

Every method gets the same budget: ``--steps`` optimiser steps on the first ``--images`` images
of the pool(s) in a seed-determined order. The headline is the top-1 after the last step
(``top1``); ``top1_best`` (best of the ``--eval-every`` evaluations, on the test set itself) is
kept for SMI's protocol, which reports the best.

For claim 7 the teacher's max-softmax confidence on the synthetic images (masked forward) and
on the real test set (dense) is summarised, with the 1-Wasserstein distance between the two
distributions, under ``confidence`` in the metrics.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from .errors import PriError
from .io import progress as progress_bar

# Defaults for a from-scratch student on a few hundred to a few thousand synthetic images (CPU):
# AdamW with a short warm-up and cosine decay trains a random-init ViT far more reliably than SGD;
# T = 4 (Hinton-style) keeps the teacher's ranking of the wrong classes visible while the target
# still peaks on the inverted class. SMI's T = 20 suits a pretrained student whose head alone
# learns: at T = 20 the softened targets are nearly flat and the loss becomes logit matching,
# which on ~100 images gave a from-scratch student no more than T = 4 did (16.6% vs 15.7%).
DEFAULTS = dict(student="vit_femto_patch4_28", steps=1000, batch=64, optimizer="adamw", lr=1e-3, momentum=0.9,
                weight_decay=0.05, schedule="cosine", warmup=50, temperature=4.0, grad_clip=1.0, seed=0)
POOL_KEYS = ("images", "masks", "labels")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--pool", nargs="+", required=True, metavar="PATH",
                   help="pool file(s) written by pri invert (several are concatenated in the order given)")
    p.add_argument("--teacher", required=True, metavar="PATH",
                   help="the teacher: a suite checkpoint (pri teacher) or a state_dict fitting --teacher-model")
    p.add_argument("--teacher-model", default=None,
                   help="teacher architecture (default: the one recorded in the suite checkpoint or the pool)")
    p.add_argument("--allow-other-teacher", action="store_true",
                   help="allow a teacher whose sha256 differs from the one the pool was inverted from")
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
                   help="synthetic images to use: the first this many of the pool(s) in a seed-determined order "
                        "(default: all); give every method the same value")
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="C",
                   help="use only pool images inverted for these labels (e.g. one-class distillation); the student "
                        "is still evaluated on all classes")
    p.add_argument("--steps", type=int, default=d["steps"], help="optimiser steps (the same for every method)")
    p.add_argument("--batch", type=int, default=d["batch"],
                   help="batch size (a batch comes from one mask-size bucket; smaller buckets give smaller batches)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=d["optimizer"],
                   help="optimiser (SMI's protocol: sgd with --lr 0.1 --momentum 0.9 --weight-decay 1e-4)")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate")
    p.add_argument("--momentum", type=float, default=d["momentum"], help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help="weight decay (weight matrices only; not norms, biases, position embedding, CLS)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=d["schedule"],
                   help="learning-rate schedule after the warm-up")
    p.add_argument("--warmup", type=int, default=d["warmup"], help="linear warm-up steps")
    p.add_argument("--temperature", type=float, default=d["temperature"],
                   help="distillation temperature T (SMI's protocol: 20)")
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"], help="clip the gradient norm (0 = off)")
    p.add_argument("--augment", choices=("off", "on"), default="off",
                   help="augment synthetic images during distillation: random roll by whole patches and horizontal "
                        "flip, the mask moving with the pixels")
    p.add_argument("--augment-shift", type=int, default=1,
                   help="with --augment on: largest roll, in patches, along each axis")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also evaluate every this many steps (0: only at the end); keeps the best for top1_best")
    p.add_argument("--limit-test", type=int, default=None,
                   help="evaluate on only the first this many test images (smoke tests; headlines use all)")
    p.add_argument("--eval-batch", type=int, default=512, help="batch size of evaluations and teacher passes")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of image selection, batches and student init")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast (auto: on for cuda, off for cpu)")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--student-out", default=None, help="also write the final student as a suite checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bar")


# ---------------------------------------------------------------------------------------------
# pools

def load_pool(path: str, option: str = "--pool") -> dict:
    if not os.path.isfile(path):
        raise PriError(option, f"pool file not found: {path}")
    try:
        pool = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise PriError(option, f"{path} is not a readable pool file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if not isinstance(pool, dict) or any(k not in pool for k in POOL_KEYS):
        raise PriError(option, f"{path} is not a pool: it needs the keys {', '.join(POOL_KEYS)} (written by pri invert)")
    imgs, masks, labels = pool["images"], pool["masks"], pool["labels"]
    if not (isinstance(imgs, torch.Tensor) and imgs.dtype == torch.uint8 and imgs.ndim == 4):
        raise PriError(option, f"{path}: images must be uint8 [M, C, H, W]")
    if not (isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and masks.ndim == 2):
        raise PriError(option, f"{path}: masks must be bool [M, N]")
    if not (isinstance(labels, torch.Tensor) and labels.ndim == 1):
        raise PriError(option, f"{path}: labels must be a 1-D tensor")
    if not (len(imgs) == len(masks) == len(labels)):
        raise PriError(option, f"{path}: {len(imgs)} images, {len(masks)} masks, {len(labels)} labels")
    if len(masks) and int(masks.sum(1).min()) < 1:
        raise PriError(option, f"{path}: an image has an empty mask")
    pool["labels"] = labels.long()
    if not isinstance(pool.get("ledger"), dict):
        pool["ledger"] = {}
    return pool


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


# ---------------------------------------------------------------------------------------------
# statistics

def wasserstein1(a, b) -> float:
    """1-D Wasserstein-1 distance between the empirical distributions of ``a`` and ``b``:
    the integral of |F_a(x) - F_b(x)| over x (exact, for any sample sizes)."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        return float("nan")
    xs = np.sort(np.concatenate([a, b]))
    dx = np.diff(xs)
    fa = np.searchsorted(a, xs[:-1], side="right") / a.size
    fb = np.searchsorted(b, xs[:-1], side="right") / b.size
    return float(np.sum(np.abs(fa - fb) * dx))


def ks_distance(a, b) -> float:
    """Kolmogorov-Smirnov statistic: max |F_a - F_b|."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        return float("nan")
    xs = np.concatenate([a, b])
    fa = np.searchsorted(a, xs, side="right") / a.size
    fb = np.searchsorted(b, xs, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def summarize(values, bins: int = 20) -> dict:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return {"n": 0}
    qs = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    hist, edges = np.histogram(v, bins=bins, range=(0.0, 1.0))
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()),
            "quantiles": {str(q): float(np.quantile(v, q)) for q in qs},
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in hist]}}


# ---------------------------------------------------------------------------------------------
# batching by mask size

class BucketSampler:
    """Index batches from buckets of equal mask size; bucket chosen with probability ∝ its size,
    images within a bucket visited in reshuffled passes. Deterministic given the generator."""

    def __init__(self, ks: torch.Tensor, batch: int, gen: torch.Generator):
        self.gen = gen
        self.batch = batch
        self.keys = sorted(int(k) for k in torch.unique(ks))
        self.members = {k: torch.nonzero(ks == k).flatten() for k in self.keys}
        self.weights = torch.tensor([len(self.members[k]) for k in self.keys], dtype=torch.float64)
        self.queue = {k: torch.empty(0, dtype=torch.long) for k in self.keys}

    def sizes(self) -> dict:
        return {k: int(len(v)) for k, v in self.members.items()}

    def next(self) -> tuple[int, torch.Tensor]:
        k = self.keys[int(torch.multinomial(self.weights, 1, generator=self.gen))]
        m = self.members[k]
        take = min(self.batch, len(m))
        q = self.queue[k]
        if len(q) < take:  # start a new pass; the leftovers go first, and no image twice in one batch
            perm = m[torch.randperm(len(m), generator=self.gen)]
            again = torch.isin(perm, q)
            q = torch.cat([q, perm[~again], perm[again]])
        self.queue[k] = q[take:]
        return k, q[:take]


def augment_sparse(x: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int], p: int, max_shift: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll each image by whole patches (up to ``max_shift`` along each axis) and flip it
    horizontally with p = 0.5; the patch mask follows the pixels."""
    gh, gw = grid
    B = x.shape[0]
    dy = torch.randint(-max_shift, max_shift + 1, (B,), generator=gen)
    dx = torch.randint(-max_shift, max_shift + 1, (B,), generator=gen)
    flip = torch.rand(B, generator=gen) < 0.5
    m = mask.view(B, gh, gw)
    xs, ms = [], []
    for i in range(B):
        xi = torch.roll(x[i], shifts=(int(dy[i]) * p, int(dx[i]) * p), dims=(-2, -1))
        mi = torch.roll(m[i], shifts=(int(dy[i]), int(dx[i])), dims=(0, 1))
        if bool(flip[i]):
            xi, mi = xi.flip(-1), mi.flip(-1)
        xs.append(xi)
        ms.append(mi.reshape(-1))
    return torch.stack(xs), torch.stack(ms)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits.float() / T, -1), F.log_softmax(teacher_logits.float() / T, -1),
                    reduction="batchmean", log_target=True) * (T * T)


def _normalise(u8: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=torch.float32, device=u8.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=u8.device).view(1, -1, 1, 1)
    return (u8.float() / 255.0 - m) / s


# ---------------------------------------------------------------------------------------------

def run(args) -> int:
    from .data import DATASETS, load_dataset
    from .io import atomic_write_json, device_name, setup_runtime, versions
    from .models import HUB, build_model, hub_checkpoint, load_model, read_checkpoint, save_checkpoint, sha256_file
    from .teacher import evaluate, lr_at, param_groups
    from .vit import grid_size, mask_to_index, num_patches, patch_size, sparse_forward

    t_start = time.perf_counter()
    # --- check options ------------------------------------------------------------------------
    for opt, val in (("--steps", args.steps), ("--batch", args.batch), ("--eval-batch", args.eval_batch)):
        if val < 1:
            raise PriError(opt, f"must be >= 1, got {val}")
    if args.images is not None and args.images < 1:
        raise PriError("--images", f"must be >= 1, got {args.images}")
    if not args.lr > 0:
        raise PriError("--lr", f"must be > 0, got {args.lr}")
    if not args.temperature > 0:
        raise PriError("--temperature", f"must be > 0, got {args.temperature}")
    if args.weight_decay < 0 or args.momentum < 0 or args.warmup < 0 or args.grad_clip < 0 or args.eval_every < 0:
        bad = next(o for o, v in (("--weight-decay", args.weight_decay), ("--momentum", args.momentum),
                                  ("--warmup", args.warmup), ("--grad-clip", args.grad_clip),
                                  ("--eval-every", args.eval_every)) if v < 0)
        raise PriError(bad, "must be >= 0")
    if args.augment_shift < 0:
        raise PriError("--augment-shift", "must be >= 0")
    if args.head_only and not args.student_checkpoint:
        raise PriError("--head-only", "training only a new head needs a pretrained student: give --student-checkpoint")
    device, amp = setup_runtime(args.threads, args.device, args.amp)
    progress = not args.no_progress

    # --- pools --------------------------------------------------------------------------------
    pools = [load_pool(p) for p in args.pool]
    pool_info = []
    for path, pool in zip(args.pool, pools):
        pool_info.append({"path": os.path.abspath(path), "sha256": sha256_file(path), "images": int(len(pool["labels"])),
                          "ledger": ledger_summary({k: v for k, v in pool["ledger"].items() if k != "teacher"})})
    shapes = {tuple(p["images"].shape[1:]) for p in pools}
    ns = {int(p["masks"].shape[1]) for p in pools}
    if len(shapes) != 1 or len(ns) != 1:
        raise PriError("--pool", f"pools differ in image shape or patch count: {sorted(shapes)}, {sorted(ns)}")
    images_all = torch.cat([p["images"] for p in pools])
    masks_all = torch.cat([p["masks"] for p in pools])
    labels_all = torch.cat([p["labels"] for p in pools])
    pool_teachers = [p["ledger"].get("teacher") or {} for p in pools]

    # --- teacher ------------------------------------------------------------------------------
    tname = args.teacher_model
    if tname is None:
        obj = read_checkpoint(args.teacher, "--teacher")
        tname = obj.get("arch") if isinstance(obj.get("arch"), str) else None
        tname = tname or next((pt.get("model") for pt in pool_teachers if pt.get("model")), None)
        del obj
        if tname is None:
            raise PriError("--teacher-model", f"{args.teacher} does not record its architecture: pass --teacher-model")
    teacher = load_model(tname, args.teacher, option="--teacher", frozen=True, model_option="--teacher-model")
    tmodel = teacher.model.to(device).eval()
    t_sha = teacher.provenance.get("sha256")
    for path, pt in zip(args.pool, pool_teachers):
        if pt.get("sha256") and pt.get("sha256") != t_sha and not args.allow_other_teacher:
            raise PriError("--teacher", f"{path} was inverted from a teacher with sha256 {str(pt.get('sha256'))[:12]}..., "
                           f"not {args.teacher} ({t_sha[:12]}...); pass the pool's teacher or --allow-other-teacher")
    t_img = int(tmodel.patch_embed.img_size[0])
    t_ch = int(tmodel.patch_embed.proj.in_channels)
    N = num_patches(tmodel)
    C, H, W = images_all.shape[1:]
    if (C, H, W) != (t_ch, t_img, t_img) or masks_all.shape[1] != N:
        raise PriError("--pool", f"pool images are {C}x{H}x{W} with {masks_all.shape[1]} patches; the teacher takes "
                       f"{t_ch}x{t_img}x{t_img} with {N} patches")
    # pool images are stored as pixels: the teacher fed here normalises them its own way
    px_mean, px_std = list(teacher.mean), list(teacher.std)
    num_classes = teacher.num_classes
    if len(labels_all) and (int(labels_all.min()) < 0 or int(labels_all.max()) >= num_classes):
        raise PriError("--pool", f"pool labels outside 0..{num_classes - 1} (the teacher's classes)")

    # --- select images ------------------------------------------------------------------------
    keep = torch.arange(len(labels_all))
    if args.classes is not None:
        bad = [c for c in args.classes if not 0 <= c < num_classes]
        if bad:
            raise PriError("--classes", f"{bad} outside the teacher's classes 0..{num_classes - 1}")
        keep = keep[torch.isin(labels_all, torch.tensor(sorted(set(args.classes))))]
        if len(keep) == 0:
            raise PriError("--classes", f"the pool(s) hold no images of classes {args.classes}")
    avail = len(keep)
    n_img = avail if args.images is None else args.images
    if n_img > avail:
        what = f" of classes {args.classes}" if args.classes is not None else ""
        raise PriError("--images", f"asked for {n_img} images but the pool(s) hold only {avail}{what}; "
                       "invert more images or lower --images (use the same value for every method)")
    gen = torch.Generator().manual_seed(args.seed)
    order = keep[torch.randperm(avail, generator=gen)][:n_img]
    images = images_all[order]
    masks = masks_all[order]
    labels = labels_all[order]
    ks = masks.sum(1)
    del images_all, masks_all

    # --- real test set ------------------------------------------------------------------------
    ds_name = args.dataset
    if ds_name is None:
        trained = teacher.provenance.get("trained") or {}
        ds_name = (trained.get("recipe") or {}).get("dataset") or (trained.get("test") or {}).get("name")
        if ds_name is None:
            raise PriError("--dataset", f"{args.teacher} does not record its dataset: pass --dataset")
    if ds_name not in DATASETS:
        raise PriError("--dataset", f"unknown dataset {ds_name!r}: choose one of {', '.join(DATASETS)}")
    test_x, test_y, test_meta = load_dataset(ds_name, args.data_root, "test", img_size=t_img)
    if int(test_meta["num_classes"]) != num_classes:
        raise PriError("--dataset", f"{ds_name} has {test_meta['num_classes']} classes, the teacher {num_classes}")
    if args.limit_test is not None:
        if args.limit_test < 1:
            raise PriError("--limit-test", "must be >= 1")
        sel = torch.arange(min(args.limit_test, len(test_y)))
        test_x = test_x[sel] if isinstance(test_x, torch.Tensor) else torch.utils.data.Subset(test_x, sel.tolist())
        test_y = test_y[sel]

    # --- student ------------------------------------------------------------------------------
    torch.manual_seed(args.seed)
    if args.student_checkpoint:
        hub_id = None
        path = args.student_checkpoint
        if path == HUB:
            path, hub_id = hub_checkpoint(args.student, "--student-checkpoint")
        st = load_model(args.student, path, img_size=t_img, option="--student-checkpoint", frozen=False,
                        model_option="--student")
        smodel, s_mean, s_std = st.model, list(st.mean), list(st.std)
        student_prov = dict(st.provenance)
        if hub_id:
            student_prov["hub_id"] = hub_id
        new_head = args.head_only or st.num_classes != num_classes
        if new_head:
            smodel.reset_classifier(num_classes)
        student_prov["new_head"] = bool(new_head)
    else:
        smodel = build_model(args.student, num_classes=num_classes, img_size=t_img, in_chans=t_ch, option="--student")
        s_mean, s_std = list(px_mean), list(px_std)
        student_prov = {"model": args.student, "init": "random", "seed": args.seed, "sha256": "random-init"}
    if grid_size(smodel) != grid_size(tmodel) or patch_size(smodel) != patch_size(tmodel):
        raise PriError("--student", f"{args.student} has a {grid_size(smodel)} grid of {patch_size(smodel)}-px patches; "
                       f"the teacher {grid_size(tmodel)} of {patch_size(tmodel)}-px: masks must mean the same patches")
    if int(smodel.patch_embed.proj.in_channels) != t_ch:
        raise PriError("--student", f"{args.student} takes {smodel.patch_embed.proj.in_channels} channels, the pool {t_ch}")
    if args.head_only:
        smodel.requires_grad_(False)
        head = smodel.get_classifier()
        head.requires_grad_(True)
    smodel.to(device)
    trainable = sum(p.numel() for p in smodel.parameters() if p.requires_grad)
    student_prov.update(trainable_params=int(trainable), params=int(sum(p.numel() for p in smodel.parameters())))

    # --- teacher passes: logits on the synthetic images (masked), confidence ------------------
    grid = grid_size(tmodel)
    p_sz = patch_size(tmodel)

    @torch.no_grad()
    def teacher_logits_all() -> torch.Tensor:
        out = torch.empty(len(labels), num_classes, dtype=torch.float32)
        for k in sorted(int(v) for v in torch.unique(ks)):
            ids = torch.nonzero(ks == k).flatten()
            for i in range(0, len(ids), args.eval_batch):
                b = ids[i:i + args.eval_batch]
                x = _normalise(images[b].to(device), px_mean, px_std)
                idx = mask_to_index(masks[b].to(device))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out[b] = sparse_forward(tmodel, x, idx).float().cpu()
        return out

    t_logits = teacher_logits_all()
    syn_conf = t_logits.softmax(-1).max(-1).values
    syn_agree = float((t_logits.argmax(-1) == labels).float().mean())

    real_conf = []
    from .data import batches, prepare
    with torch.no_grad():
        correct = 0
        for x, y in batches(test_x, test_y, args.eval_batch):
            x = prepare(x.to(device), t_img, teacher.mean, teacher.std)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                lg = tmodel(x).float().cpu()
            real_conf.append(lg.softmax(-1).max(-1).values)
            correct += int((lg.argmax(-1) == y).sum())
    real_conf = torch.cat(real_conf)
    teacher_top1 = correct / max(1, len(test_y))
    confidence = {
        "what": "teacher max-softmax probability (T = 1): synthetic images fed masked, real test images dense",
        "synthetic": summarize(syn_conf.numpy()), "real_test": summarize(real_conf.numpy()),
        "wasserstein1": wasserstein1(syn_conf.numpy(), real_conf.numpy()),
        "ks": ks_distance(syn_conf.numpy(), real_conf.numpy()),
        "synthetic_teacher_agreement": syn_agree,
    }

    # --- distillation -------------------------------------------------------------------------
    groups = param_groups(smodel, args.weight_decay)
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    else:
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999))
    sampler = BucketSampler(ks, args.batch, gen)
    T = float(args.temperature)
    warmup = min(args.warmup, args.steps)

    def lr_for(step: int) -> float:
        if args.schedule == "constant":
            return args.lr * min(1.0, (step + 1) / warmup) if warmup else args.lr
        return lr_at(step, args.steps, warmup, args.lr)

    def set_train_mode():
        if args.head_only:
            smodel.eval()
            smodel.get_classifier().train()
        else:
            smodel.train()

    def eval_student() -> dict:
        return evaluate(smodel, test_x, test_y, num_classes, t_img, s_mean, s_std, device, batch=args.eval_batch,
                        amp=amp)

    history = []
    best = {"top1": -1.0, "step": None}
    set_train_mode()
    t_train = time.perf_counter()
    bar = progress_bar(args.steps, progress, f"distill {args.student}")
    loss_ema = None
    for step in range(args.steps):
        k, b = sampler.next()
        xb_u8, mb = images[b], masks[b]
        if args.augment == "on" and args.augment_shift >= 0:
            xb_u8, mb = augment_sparse(xb_u8, mb, grid, p_sz, args.augment_shift, gen)
        xb_u8, mb = xb_u8.to(device), mb.to(device)
        idx = mask_to_index(mb)
        if args.augment == "on":
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                tl = sparse_forward(tmodel, _normalise(xb_u8, px_mean, px_std), idx).float()
        else:
            tl = t_logits[b].to(device)
        xs = _normalise(xb_u8, s_mean, s_std)
        for g in opt.param_groups:
            g["lr"] = lr_for(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            sl = sparse_forward(smodel, xs, idx)
        loss = kd_loss(sl, tl, T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in smodel.parameters() if p.requires_grad], args.grad_clip)
        opt.step()
        if (step + 1) % 10 == 0 or step + 1 == args.steps:
            lv = float(loss.detach())
            loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
            bar.set_postfix(loss=f"{loss_ema:.4f}")
        bar.update(1)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            ev = eval_student()
            history.append({"step": step + 1, "top1": ev["top1"]})
            if ev["top1"] > best["top1"]:
                best = {"top1": ev["top1"], "step": step + 1}
            set_train_mode()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - t_train
    final = eval_student()
    history.append({"step": args.steps, "top1": final["top1"]})
    if final["top1"] > best["top1"]:
        best = {"top1": final["top1"], "step": args.steps}

    print(f"pri distill: {args.student} from {n_img} synthetic images, {args.steps} steps: top-1 "
          f"{100 * final['top1']:.2f}% final, {100 * best['top1']:.2f}% best (teacher {100 * teacher_top1:.2f}%); "
          f"confidence W1 {confidence['wasserstein1']:.4f}", file=sys.stderr)

    hyper = {k: getattr(args, k) for k in ("steps", "batch", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                                           "warmup", "temperature", "grad_clip", "augment", "augment_shift",
                                           "eval_every", "head_only", "seed", "images", "classes", "limit_test")}
    hyper.update(images=n_img, amp_bf16=amp, loss="KL(softmax(t/T) || softmax(s/T)) * T^2, batchmean",
                 weight_decay_on="weight matrices only", feed="masked patches only (sparse_forward), CLS prepended",
                 image_order="first --images of a seed-determined permutation of the (class-filtered) pool(s)",
                 pixel_mean=px_mean, pixel_std=px_std, student_mean=s_mean, student_std=s_std)
    ledger0 = pool_info[0]["ledger"] if pool_info else {}
    metrics = {
        "top1": final["top1"], "top1_final": final["top1"], "top1_best": best["top1"], "best_step": best["step"],
        "headline": "top1 (after the last step; top1_best selects on the test set and is kept for SMI's protocol)",
        "per_class": final["per_class"], "history": history, "steps": args.steps, "images": n_img,
        "images_available": avail, "classes": sorted(set(args.classes)) if args.classes is not None else None,
        "label_counts": torch.bincount(labels, minlength=num_classes).tolist(),
        "mask_sizes": {str(k): v for k, v in sampler.sizes().items()},
        "pools": pool_info, "method": ledger0.get("method"), "pool_params": ledger0,
        "teacher": {"path": os.path.abspath(args.teacher), "provenance": teacher.provenance,
                    "test_top1": teacher_top1},
        "student": {"name": args.student, "provenance": student_prov},
        "test": {"dataset": ds_name, "source": test_meta["source"], "sha256": test_meta["sha256"],
                 "num_images": int(len(test_y))},
        "confidence": confidence, "hyperparameters": hyper,
        "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - t_start,
        "final_loss_ema": loss_ema, "versions": versions(), "seed": args.seed, "device": device_name(device),
    }
    if args.student_out:
        sprov = {"distilled": {k: metrics[k] for k in ("top1", "top1_best", "steps", "images", "method")},
                 "pools": pool_info, "hyperparameters": hyper, "student": student_prov}
        metrics["student"]["checkpoint_sha256"] = save_checkpoint(args.student_out, smodel.cpu(), args.student,
                                                                  s_mean, s_std, sprov)
    atomic_write_json(args.out, metrics)
    return 0
