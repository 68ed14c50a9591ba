"""Train a teacher ViT from scratch (or fine-tune / evaluate one) and write a suite checkpoint with provenance.

Three modes:
- from scratch (default: vit_pico_patch4_28 on Fashion-MNIST, a few CPU minutes);
- ``--init-checkpoint PATH``: fine-tune an ImageNet checkpoint (e.g. DeiT on CIFAR-10/100 at
  224 px, images upsampled per batch) with a new head for the dataset's classes;
  ``--init-checkpoint hub`` takes timm's pretrained weights for ``--model`` from the Hugging Face
  hub (online, or its local cache);
- ``--checkpoint PATH``: load a trained model and only evaluate it (``--out`` then re-writes it
  as a suite checkpoint carrying its measured accuracy).

Training uses timm's normal dense forward (``model(x)``), AdamW with weight decay on the
weight matrices only, a linear warm-up then cosine decay stepped every iteration, label
smoothing and optional light augmentation (random translation with zero padding, horizontal
flip). Top-1 is measured on the dataset's full test split.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from pri.core.runtime import progress as progress_bar
from pri.errors import PriError
from pri.options import add_runtime_options

# The default recipe, tuned on 2 CPU cores for Fashion-MNIST: a short schedule (4 epochs) wants a
# high peak learning rate (4e-3 beat 1e-3 and 2e-3) and no augmentation (the model underfits);
# no label smoothing, because a label-smoothed teacher distils worse (Mueller et al., 2019) and
# its flattened confidences would blur claim 7's confidence comparison.
@dataclass
class TeacherConfig:
    """What a teacher job is asked (``pri teacher``'s options, whose defaults are these): train from
    scratch, fine-tune from --init-checkpoint, or evaluate --checkpoint."""
    dataset: str = "fashion_mnist"
    model: str = "vit_pico_patch4_28"
    data_root: str | None = None
    checkpoint: str | None = None
    init_checkpoint: str | None = None
    num_classes: int | None = None
    img_size: int | None = None
    epochs: float = 4.0
    batch: int = 128
    lr: float = 4e-3
    weight_decay: float = 0.05
    warmup: float = 0.3
    label_smoothing: float = 0.0
    crop_pad: int = 0
    hflip: bool = False
    grad_clip: float = 1.0
    limit_train: int | None = None
    limit_test: int | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    amp: str = "auto"
    eval_batch: int = 512
    workers: int = 0
    out: str | None = None
    metrics: str | None = None
    no_progress: bool = False

    @classmethod
    def from_args(cls, args) -> "TeacherConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass
class TeacherResult:
    """A trained (or loaded) teacher and what was measured: the model with its normalisation, the
    test evaluation, the recipe and training data (None when only evaluated), the seconds."""
    model: torch.nn.Module
    mean: list
    std: list
    evaluation: dict
    test_meta: dict
    recipe: dict | None
    train_data: dict | None
    loaded: object  # the evaluated checkpoint's pri.core.engine.Teacher, or None
    steps: int
    device: torch.device
    timing: dict


DEFAULTS = {f.name: f.default for f in fields(TeacherConfig)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--dataset", default=d["dataset"], help="fashion_mnist, digits, cifar10, cifar100 or imagefolder")
    p.add_argument("--data-root", default=None,
                   help="folder holding the dataset (default: /usr/share/datasets/fashion-mnist for fashion_mnist; "
                        "digits needs none)")
    p.add_argument("--model", default=d["model"], help="a small suite ViT (e.g. vit_pico_patch4_28) or a timm ViT name")
    p.add_argument("--checkpoint", default=None,
                   help="evaluate this trained checkpoint instead of training (suite checkpoint, .pth or .safetensors)")
    p.add_argument("--init-checkpoint", default=None,
                   help="fine-tune from this (e.g. ImageNet DeiT) checkpoint; its head is replaced by a new one. "
                        "'hub': timm's pretrained weights for --model from the Hugging Face hub (online, or its "
                        "local cache); the file's sha256 is recorded")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the head (default: the dataset's)")
    p.add_argument("--img-size", type=int, default=None,
                   help="model input size; images are resized per batch (default: the model's native size)")
    p.add_argument("--epochs", type=float, default=d["epochs"], help="training epochs (fractions allowed)")
    p.add_argument("--batch", type=int, default=d["batch"], help="batch size")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help="AdamW weight decay (weight matrices only; not norms, biases, position embedding, CLS)")
    p.add_argument("--warmup", type=float, default=d["warmup"], help="linear warm-up length in epochs, then cosine to 0")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"], help="label smoothing of the CE loss")
    p.add_argument("--crop-pad", type=int, default=d["crop_pad"],
                   help="random-crop augmentation: translate by up to this many pixels (zero fill); 0 = off")
    p.add_argument("--hflip", action="store_true", help="random horizontal flip (p = 0.5)")
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"], help="clip the gradient norm (0 = off)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="use only this many training images (a seed-determined subset; for smoke tests)")
    p.add_argument("--limit-test", type=int, default=None,
                   help="evaluate on only the first this many test images (for smoke tests; the headline uses all)")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of initialisation, data order and augmentation")
    add_runtime_options(p, amp=True, device_help="where to train")
    p.add_argument("--eval-batch", type=int, default=d["eval_batch"], help="batch size of the evaluation")
    p.add_argument("--workers", type=int, default=d["workers"], help="data-loading workers (imagefolder only)")
    p.add_argument("--out", default=None, help="suite checkpoint to write (required when training)")
    p.add_argument("--metrics", default=None, help="metrics JSON to write (top-1, checkpoint sha256, recipe, versions)")


def model_geometry(model) -> tuple[int, int]:
    return int(model.patch_embed.img_size[0]), int(model.patch_embed.proj.in_channels)


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by a random (dy, dx) in [-pad, pad] with zero fill (random crop of the padded image)."""
    if pad <= 0:
        return x
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, None, :, None].expand(B, C, H, W)
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, None, :].expand(B, C, H, W)
    bidx = torch.arange(B, device=x.device)[:, None, None, None]
    cidx = torch.arange(C, device=x.device)[None, :, None, None]
    out = xp[bidx, cidx, rows, cols]
    return out


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _init_from_checkpoint(model, path: str, num_classes: int) -> dict:
    """Load an ImageNet (or any) ViT checkpoint into ``model`` except its head; returns a note."""
    from timm.layers import resample_abs_pos_embed

    from pri.files.models import read_checkpoint, sha256_file, state_dict_of

    sd = dict(state_dict_of(read_checkpoint(path, "--init-checkpoint")))
    head_keys = [k for k in sd if k.startswith("head.") or k.startswith("head_dist.")]
    for k in head_keys:
        sd.pop(k)
    pe = sd.get("pos_embed")
    if pe is not None and pe.shape != model.pos_embed.shape:
        npre = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        sd["pos_embed"] = resample_abs_pos_embed(pe, list(model.patch_embed.grid_size), num_prefix_tokens=npre)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        first = [ln.strip() for ln in str(e).splitlines() if ln.strip()][1:3]
        raise PriError("--init-checkpoint", f"{path} does not fit {type(model).__name__} as built: "
                       f"{'; '.join(first)[:300]}") from e
    missing = [k for k in missing if not k.startswith("head")]
    if missing or unexpected:
        raise PriError("--init-checkpoint", f"{path} does not fit the model: missing {missing[:4]}, "
                       f"unexpected {list(unexpected)[:4]}")
    model.reset_classifier(num_classes)
    return {"path": os.path.abspath(path), "sha256": sha256_file(path), "dropped_head_keys": head_keys}


def check_options(args) -> None:
    from pri.files.data import DATASETS

    if args.dataset not in DATASETS:
        raise PriError("--dataset", f"unknown dataset {args.dataset!r}: choose one of {', '.join(DATASETS)}")
    if args.checkpoint and args.init_checkpoint:
        raise PriError("--init-checkpoint", "give either --checkpoint (evaluate) or --init-checkpoint (fine-tune), not both")
    if not args.checkpoint and not args.out:
        raise PriError("--out", "training needs --out PATH for the checkpoint (or pass --checkpoint to evaluate only)")
    from pri import checks
    from pri.checks import option_of

    for opt in ("epochs", "lr"):
        checks.positive(getattr(args, opt), option_of(opt))
    for opt in ("weight_decay", "warmup", "grad_clip"):
        checks.non_negative(getattr(args, opt), option_of(opt))
    for opt, lo in (("batch", 1), ("eval_batch", 1), ("crop_pad", 0), ("workers", 0), ("num_classes", 2),
                    ("limit_train", 1), ("limit_test", 1)):
        if getattr(args, opt) is not None:
            checks.integer(getattr(args, opt), option_of(opt), lo)
    checks.number(args.label_smoothing, "--label-smoothing", 0, 1, hi_open=True)
    from pri.checks import seed as check_seed
    from pri.files.io import check_distinct, check_writable

    check_seed(args.seed)
    check_distinct({"--out": args.out, "--metrics": args.metrics},
                   {"--checkpoint": args.checkpoint, "--init-checkpoint": args.init_checkpoint})
    for opt in ("out", "metrics"):
        if getattr(args, opt):
            check_writable(getattr(args, opt), "--" + opt)


def _limit(x, y, keep):
    return (x[keep] if isinstance(x, torch.Tensor) else torch.utils.data.Subset(x, keep.tolist())), y[keep]


def load_test(args):
    from pri.files.data import load_dataset
    from pri.files.models import native_img_size

    x, y, meta = load_dataset(args.dataset, args.data_root, "test", img_size=args.img_size or native_img_size(args.model))
    if args.limit_test is not None:
        if args.limit_test < 1:
            raise PriError("--limit-test", "must be >= 1")
        x, y = _limit(x, y, torch.arange(min(args.limit_test, len(y))))
    return x, y, meta


def build(args, test_meta):
    """The model to train (random init from the seed, or ImageNet weights with a new head) or the
    checkpoint to evaluate, with its normalisation and how it was initialised."""
    from pri.files.models import HUB, SMALL_VITS, build_model, hub_checkpoint, load_model

    ds_classes = int(test_meta["num_classes"])
    num_classes = args.num_classes or ds_classes
    if num_classes < ds_classes:
        raise PriError("--num-classes", f"{args.dataset} has {ds_classes} classes; --num-classes {num_classes} is too few")
    init_note, loaded = None, None
    if args.checkpoint:
        loaded = load_model(args.model, args.checkpoint, num_classes=args.num_classes, img_size=args.img_size,
                            frozen=True)
        model, mean, std = loaded.model, list(loaded.mean), list(loaded.std)
    else:
        torch.manual_seed(args.seed)
        in_chans = None
        if args.model in SMALL_VITS:
            in_chans = int(test_meta["in_chans"]) if SMALL_VITS[args.model]["in_chans"] < test_meta["in_chans"] else None
        model = build_model(args.model, num_classes=num_classes, img_size=args.img_size, in_chans=in_chans)
        if args.init_checkpoint == HUB:
            path, hub_id = hub_checkpoint(args.model, "--init-checkpoint")
            init_note = {"hub_id": hub_id, **_init_from_checkpoint(model, path, num_classes)}
        elif args.init_checkpoint:
            init_note = _init_from_checkpoint(model, args.init_checkpoint, num_classes)
        cfg = (getattr(model, "pretrained_cfg", None) or {}) if init_note is not None else {}
        mean = list(cfg.get("mean") or test_meta["mean"])
        std = list(cfg.get("std") or test_meta["std"])
    img, ch = model_geometry(model)
    if int(test_meta["in_chans"]) > ch:
        raise PriError("--model", f"{args.model} takes {ch}-channel images but {args.dataset} has "
                       f"{test_meta['in_chans']} channels")
    if len(mean) != ch:
        mean, std = [sum(mean) / len(mean)] * ch, [sum(std) / len(std)] * ch
    return model, int(model.num_classes), mean, std, init_note, loaded


def recipe_of(args, num_classes, img, ch, mean, std, init_note, amp, total, warmup, n_train) -> dict:
    """What a teacher's training did, recorded next to its checkpoint."""
    return {
        "mode": "fine-tune" if args.init_checkpoint else "from-scratch",
        "model": args.model, "dataset": args.dataset, "num_classes": num_classes, "img_size": img, "in_chans": ch,
        "optimizer": "AdamW", "betas": [0.9, 0.999], "lr": args.lr, "weight_decay": args.weight_decay,
        "weight_decay_on": "weight matrices only", "schedule": "linear warm-up then cosine to 0, per step",
        "warmup_epochs": args.warmup, "warmup_steps": warmup, "epochs": args.epochs, "steps": total,
        "batch": args.batch, "label_smoothing": args.label_smoothing, "crop_pad": args.crop_pad, "hflip": args.hflip,
        "grad_clip": args.grad_clip, "amp_bf16": amp, "train_images": n_train, "limit_train": args.limit_train,
        "mean": mean, "std": std, "seed": args.seed, "init_checkpoint": init_note,
    }


def train(args, model, num_classes, mean, std, init_note, device, amp, progress) -> tuple[dict, dict, int]:
    """Train (or fine-tune) ``model`` on the training split; returns the recipe, the training data's
    provenance and the steps taken."""
    from pri.core.runtime import sync
    from pri.files.data import batches, load_dataset, prepare
    from pri.tasks.train import lr_at, make_optimizer, set_lr

    img, ch = model_geometry(model)
    x_tr, y_tr, meta = load_dataset(args.dataset, args.data_root, "train", img_size=img)
    gen = torch.Generator().manual_seed(args.seed)
    if args.limit_train is not None:
        if args.limit_train < 1:
            raise PriError("--limit-train", "must be >= 1")
        x_tr, y_tr = _limit(x_tr, y_tr, torch.randperm(len(y_tr), generator=gen)[:args.limit_train].sort().values)
    n_train = len(y_tr)
    per_epoch = math.ceil(n_train / args.batch)
    total = max(1, int(round(args.epochs * per_epoch)))
    warmup = int(round(args.warmup * per_epoch))
    recipe = recipe_of(args, num_classes, img, ch, mean, std, init_note, amp, total, warmup, n_train)
    opt = make_optimizer(model, "adamw", args.lr, args.weight_decay)
    model.train()
    t0 = time.perf_counter()
    bar = progress_bar(total, progress, f"teacher {args.model}")
    loss_ema, steps = None, 0
    while steps < total:
        for x, y in batches(x_tr, y_tr, args.batch, order=torch.randperm(n_train, generator=gen),
                            num_workers=args.workers):
            if steps >= total:
                break
            if args.crop_pad:
                x = random_translate(x, args.crop_pad, gen)
            if args.hflip:
                x = random_hflip(x, gen)
            x = prepare(x.to(device, non_blocking=True), img, mean, std)
            y = y.to(device, non_blocking=True)
            set_lr(opt, lr_at(steps, total, warmup, args.lr))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            steps += 1
            if steps % 10 == 0 or steps == total:
                lv = float(loss.detach())
                loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
                bar.set_postfix(loss=f"{loss_ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            bar.update(1)
    bar.close()
    sync(device)
    recipe.update(final_train_loss_ema=loss_ema)
    model.eval()
    return recipe, {"source": meta["source"], "sha256": meta["sha256"], "num_images": n_train,
                    "train_seconds": time.perf_counter() - t0}, steps


def fit(cfg: TeacherConfig) -> TeacherResult:
    """The library function behind ``pri teacher``: train (or fine-tune) the teacher a config asks
    for, or load the checkpoint it names, and evaluate it on the test split. Writes nothing."""
    from pri.core.runtime import setup_runtime
    from pri.tasks.train import evaluate

    t_start = time.perf_counter()
    device, amp = setup_runtime(cfg.threads, cfg.device, cfg.amp)
    progress = not cfg.no_progress
    test_x, test_y, test_meta = load_test(cfg)
    model, num_classes, mean, std, init_note, loaded = build(cfg, test_meta)
    model.to(device)
    recipe, train_data, steps = (None, None, 0)
    if not cfg.checkpoint:
        recipe, train_data, steps = train(cfg, model, num_classes, mean, std, init_note, device, amp, progress)
    timing = {"train_seconds": train_data.pop("train_seconds") if train_data else 0.0}
    t_eval = time.perf_counter()
    ev = evaluate(model, test_x, test_y, num_classes, model_geometry(model)[0], mean, std, device,
                  batch=cfg.eval_batch, amp=amp, workers=cfg.workers, progress=progress)
    timing.update(eval_seconds=time.perf_counter() - t_eval, total_seconds=time.perf_counter() - t_start)
    return TeacherResult(model, mean, std, ev, test_meta, recipe, train_data, loaded, steps, device, timing)


def run(args) -> int:
    """``pri teacher``: the options as a TeacherConfig, checked; fit; the checkpoint and metrics written."""
    cfg = TeacherConfig.from_args(args)
    check_options(cfg)
    t_start = time.perf_counter()
    res = fit(cfg)
    ev = res.evaluation
    print(f"pri teacher: {cfg.model} on {cfg.dataset} test: top-1 {100 * ev['top1']:.2f}% "
          f"({ev['num_images']} images)" + (f", trained {res.timing['train_seconds']:.1f} s" if res.recipe else ""))
    write_outputs(cfg, res, lambda: {**res.timing, "total_seconds": time.perf_counter() - t_start})
    return 0


def _checkpoint_ref(args) -> str:
    """The checkpoint a metrics file describes: the one written, relative to the metrics file's folder
    (no output path in an output: the same work gives the same bytes wherever it is written), or the
    absolute path of the one evaluated."""
    if not args.out:
        return os.path.abspath(args.checkpoint)
    return os.path.relpath(os.path.abspath(args.out), os.path.dirname(os.path.abspath(args.metrics)))


def write_outputs(args, res: TeacherResult, timing) -> None:
    """The checkpoint (--out) and the metrics (--metrics): the same work gives the same bytes, the
    seconds go to each output's timing side file (``timing()`` gives them)."""
    from pri.core.runtime import device_name, versions, weights_sha256
    from pri.files.io import atomic_write_json, with_timing
    from pri.files.models import save_checkpoint, sha256_file

    model, ev, test_meta, recipe, mean, std = res.model, res.evaluation, res.test_meta, res.recipe, res.mean, res.std
    device, loaded, steps = res.device, res.loaded, res.steps
    num_classes, (img, ch) = int(model.num_classes), model_geometry(model)
    test_info = {"name": args.dataset, "split": "test", "source": test_meta["source"], "sha256": test_meta["sha256"],
                 "num_images": ev["num_images"]}
    provenance = {
        "model": args.model, "num_classes": num_classes, "img_size": img, "in_chans": ch,
        "test_top1": ev["top1"], "test_per_class": ev["per_class"], "test": test_info, "versions": versions(),
        "device": device_name(device), "seed": args.seed, "weights_sha256": weights_sha256(model),
    }
    if recipe is not None:
        provenance.update(recipe=recipe, train=res.train_data)
    else:
        provenance["evaluated_checkpoint"] = {"path": os.path.abspath(args.checkpoint),
                                              "sha256": sha256_file(args.checkpoint)}
        if loaded.provenance.get("trained"):
            provenance["trained"] = loaded.provenance["trained"]
    sha = None
    if args.out:
        sha = save_checkpoint(args.out, model, args.model, mean, std, provenance, test_confidence=ev["confidence"])
        with_timing(args.out, timing())
    if args.metrics:
        atomic_write_json(args.metrics, {
            "top1": ev["top1"], "top5": ev["top5"], "per_class": ev["per_class"], "test_images": ev["num_images"],
            "checkpoint": _checkpoint_ref(args),
            "sha256": sha if sha else sha256_file(args.checkpoint), "weights_sha256": provenance["weights_sha256"],
            "model": args.model, "dataset": args.dataset, "recipe": recipe, "steps": steps,
            "mean": mean, "std": std, "versions": versions(), "device": device_name(device), "seed": args.seed,
            "mode": recipe["mode"] if recipe else "evaluate",
            "test_confidence": [round(float(c), 6) for c in ev["confidence"]],
        })
        with_timing(args.metrics, timing())
