"""The verdict student: a fixed random ViT backbone, frozen, and a linear head fitted by KD to convergence.

The paper (and SMI) distil into a student pretrained elsewhere whose backbone is kept and whose new
head is trained on the synthetic images. The embedded default has no pretrained backbone that was
not trained on the teacher's own data, so the verdict student's backbone is a *fixed random* ViT:
built from a constant seed (the same weights on every machine, its sha256 in every result), with a
position embedding drawn at unit scale so that every token knows where it sits. It takes the sparse
tokens as the teacher does (the masked patches only, each with its own position embedding; padding
masked out of attention). Its features are, for every block, the class token and the mean of the
kept patch tokens after the final norm.

The head is linear on those features (standardised on the training rows) and minimises the
distillation loss ``T^2 KL(softmax(t/T) || softmax(s/T))`` plus ``l2 * |W|^2`` over every (image,
augmentation) of the pool: a convex problem, solved full-batch by L-BFGS until the gradient
vanishes. Two heads fitted from different random initialisations therefore land on the same
optimum, so the verdict student adds almost no noise of its own: what varies between pools is the
pools. docs/methods.md ("The verdict student") gives the choice and its ceiling.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# The backbone and the head's fit. The backbone's shape was chosen for its ceiling (the same head
# trained on real training images) against its cost per image; l2 and T on the validation split
# (benchmarks/probe_choice.py writes the table, benchmarks/results/probe_choice.md).
DEFAULTS = dict(embed_dim=128, depth=2, num_heads=2, pos_std=1.0, backbone_seed=20250, temperature=4.0,
                l2=1e-2, max_iter=500, runs=2)
GRAD_TOL = 1e-6  # L-BFGS stops when the largest gradient entry falls below this


def build_backbone(img_size: int, patch: int, in_chans: int, cfg: dict = DEFAULTS):
    """The frozen random ViT (no head), the same weights for the same shape on every machine."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["backbone_seed"]))
        model = VisionTransformer(img_size=img_size, patch_size=patch, in_chans=in_chans, num_classes=0,
                                  embed_dim=int(cfg["embed_dim"]), depth=int(cfg["depth"]),
                                  num_heads=int(cfg["num_heads"]), class_token=True, global_pool="token")
        torch.nn.init.normal_(model.pos_embed, std=float(cfg["pos_std"]))
    return model.eval().requires_grad_(False)


def backbone_record(model, cfg: dict = DEFAULTS) -> dict:
    from pri.core.runtime import weights_sha256

    keys = ("embed_dim", "depth", "num_heads", "pos_std", "backbone_seed")
    return {"kind": "fixed random ViT, frozen", **{k: cfg[k] for k in keys},
            "features": "per block: CLS and the mean of the kept patch tokens, after the final norm",
            "weights_sha256": weights_sha256(model), "dim": feature_dim(model)}


def feature_dim(model) -> int:
    return 2 * len(model.blocks) * int(model.embed_dim)


@torch.no_grad()
def features(model, x: torch.Tensor, masks: torch.Tensor | None, batch: int = 500) -> torch.Tensor:
    """Features [B, F] of normalised images ``x`` on their masked patches (``masks`` None: all)."""
    from pri.core.vit import padded_index, sparse_forward

    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        idx = valid = None
        if masks is not None:
            idx, valid = padded_index(masks[i:i + batch].to(xb.device))
        layers: list = []
        sparse_forward(model, xb, idx, valid=valid, layers=layers)
        npre = model.num_prefix_tokens
        keep = (valid if valid is not None else torch.ones(len(xb), layers[0].shape[1] - npre, dtype=torch.bool,
                                                            device=xb.device)).unsqueeze(-1).float()
        parts = []
        for h in layers:
            h = model.norm(h)
            parts += [h[:, 0], (h[:, npre:] * keep).sum(1) / keep.sum(1).clamp_min(1)]
        out.append(torch.cat(parts, 1).float().cpu())
    return torch.cat(out) if out else torch.empty(0, feature_dim(model))


@dataclass
class Head:
    weight: torch.Tensor  # [F, K]
    bias: torch.Tensor  # [K]
    mean: torch.Tensor  # [F]: the training rows' feature mean and SD (standardisation)
    std: torch.Tensor

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        return ((feats - self.mean) / self.std) @ self.weight + self.bias


def kd_objective(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """Mean over rows of ``T^2 KL(softmax(t/T) || softmax(s/T))``."""
    return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                    reduction="batchmean") * T * T


def fit_head(feats: torch.Tensor, targets: torch.Tensor, T: float, l2: float, seed: int,
             max_iter: int = DEFAULTS["max_iter"], standardise: bool = True) -> tuple[Head, dict]:
    """The convex KD fit of a linear head, from a random start drawn from ``seed``."""
    feats, targets = feats.double(), targets.double()
    if standardise:
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(feats.shape[1], dtype=feats.dtype), torch.ones(feats.shape[1], dtype=feats.dtype)
    a = (feats - mean) / std
    g = torch.Generator().manual_seed(int(seed))
    W = (0.01 * torch.randn(a.shape[1], targets.shape[1], generator=g, dtype=torch.float64)).requires_grad_(True)
    b = torch.zeros(targets.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=GRAD_TOL,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = kd_objective(a @ W + b, targets, T) + l2 * (W * W).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # L-BFGS is many small vector operations: more threads only wait on each other
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    loss = float(closure().detach())
    grad = max(float(W.grad.abs().max()), float(b.grad.abs().max()))
    iters = int(opt.state[W]["n_iter"])
    info = {"loss": loss, "max_grad": grad, "iterations": iters, "converged": grad < 10 * GRAD_TOL, "seed": int(seed)}
    return Head(W.detach().float(), b.detach().float(), mean.float(), std.float()), info


def kl_to_teacher(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Mean KL(teacher || student) in nats at T = 1 (the softmax outputs), over the rows."""
    return float(kd_objective(student_logits.double(), teacher_logits.double(), 1.0))


def scores(head: Head, feats: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
           num_classes: int) -> dict:
    """Top-1, per-class top-1 and KL(teacher || student) of a head on real images' features."""
    logits = head.logits(feats)
    hit = logits.argmax(-1) == labels
    count = torch.bincount(labels, minlength=num_classes)
    right = torch.bincount(labels[hit], minlength=num_classes)
    out = {"top1": float(hit.float().mean()),
           "per_class": [float(r) / float(c) if c else None for r, c in zip(right.tolist(), count.tolist())]}
    if teacher_logits is not None:
        out["kl_teacher"] = kl_to_teacher(teacher_logits, logits)
    return out


_CACHE: dict = {}


def cached(key: tuple, make):
    """Features and teacher logits of real images, kept for the process: ``pri batch`` runs every
    method of a seed in one process, so the test set passes through each network once."""
    key = repr(key)  # the images' sha256 may be a mapping of files to digests
    if key not in _CACHE:
        if len(_CACHE) >= 8:
            _CACHE.clear()
        _CACHE[key] = make()
    return _CACHE[key]


@torch.no_grad()
def dense_logits(model, x: torch.Tensor, img: int, mean, std, device, batch: int) -> torch.Tensor:
    """``model``'s logits (or features, for a headless backbone) on real images in [0, 1]."""
    from pri.files.data import prepare

    return torch.cat([model(prepare(x[i:i + batch].to(device), img, mean, std)).float().cpu()
                      for i in range(0, len(x), batch)])


def real_features(backbone, teacher, x: torch.Tensor, sha: str, device, batch: int) -> torch.Tensor:
    """The backbone's features of real images in [0, 1], cached by the images' sha256."""
    from pri.core.runtime import weights_sha256
    from pri.files.data import prepare

    img = int(teacher.model.patch_embed.img_size[0])
    return cached(("features", weights_sha256(backbone), sha, len(x), img, tuple(teacher.mean), tuple(teacher.std)),
                  lambda: torch.cat([features(backbone, prepare(x[i:i + batch].to(device), img, teacher.mean,
                                                                 teacher.std), None)
                                     for i in range(0, len(x), batch)]))


def teacher_real_logits(teacher, x: torch.Tensor, sha: str, device, batch: int) -> torch.Tensor:
    """The teacher's logits on real images in [0, 1], cached by the images' sha256."""
    from pri.core.runtime import weights_sha256

    img = int(teacher.model.patch_embed.img_size[0])
    key = ("teacher", teacher.provenance.get("weights_sha256") or weights_sha256(teacher.model), sha, len(x))
    return cached(key, lambda: dense_logits(teacher.model, x, img, teacher.mean, teacher.std, device, batch))


def training_rows(backbone, teacher, syn, aug, table, device, batch: int, logits_of) -> tuple:
    """Features and teacher logits of every (synthetic image, augmentation): the head's training set.

    ``table`` [M, A, K]: the teacher's logits when already computed, else ``logits_of(images, masks)``."""
    from pri.files.data import normalise

    combos = range(len(aug)) if aug is not None else [None]
    feats, targets = [], []
    for c in combos:
        x, m = syn.images, syn.masks
        if c is not None:
            combo = torch.full((len(x),), c, dtype=torch.long)
            x, m = aug.apply_each(x, combo), aug.move_masks(m, combo)
        feats.append(features(backbone, normalise(x.to(device), teacher.mean, teacher.std), m, batch))
        targets.append(table[:, c or 0] if table is not None else logits_of(x, m))
    return torch.cat(feats), torch.cat(targets)


def verdict_student(args, teacher, syn, aug, table, real: dict, device, logits_of) -> dict:
    """Fit ``args.probe_runs`` heads (different random starts) on the pool; score them on real images.

    ``real``: {"test": (x, y, sha256), "val": (x, y, sha256) or absent}."""
    from pri.core.runtime import derive_seed
    from pri.core.vit import patch_size

    m = teacher.model
    backbone = build_backbone(int(m.patch_embed.img_size[0]), patch_size(m), int(m.patch_embed.proj.in_channels))
    backbone.to(device)
    x, t = training_rows(backbone, teacher, syn, aug, table, device, args.eval_batch, logits_of)
    evals = {k: (real_features(backbone, teacher, v[0], v[2], device, args.eval_batch),
                 teacher_real_logits(teacher, v[0], v[2], device, args.eval_batch), v[1])
             for k, v in real.items() if v is not None}
    runs = []
    for r in range(args.probe_runs):
        head, fit = fit_head(x, t, args.probe_temperature, args.probe_l2, derive_seed(args.seed, "probe", r))
        res = scores(head, evals["test"][0], evals["test"][2], evals["test"][1], teacher.num_classes)
        if "val" in evals:
            res["val_top1"] = scores(head, evals["val"][0], evals["val"][2], None, teacher.num_classes)["top1"]
        runs.append({**res, "fit": fit})
    mean = lambda k: float(np.mean([r[k] for r in runs]))  # noqa: E731
    tops = [r["top1"] for r in runs]
    return {"top1": mean("top1"), "top1_runs": tops, "kl_teacher": mean("kl_teacher"),
            **({"val_top1": mean("val_top1")} if "val" in evals else {}),
            "per_class": runs[0]["per_class"], "spread": float(np.ptp(tops)), "runs": runs,
            "rows": int(len(x)), "temperature": args.probe_temperature, "l2": args.probe_l2,
            "backbone": backbone_record(backbone),
            "headline": "top1: test top-1 of the verdict student (fixed random ViT backbone, linear head fitted by "
                        "KD to convergence on every image and augmentation of the pool), mean over the heads"}
