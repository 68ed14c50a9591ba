"""Run DMI, SMI or PRI inversion on a timm ViT and write a pool file.

The pool is one file, loadable with torch.load(path, weights_only=True): a dict with images
(uint8 [M,C,H,W], pixels outside the mask exactly 0), masks (bool [M,N]), labels, trajectory,
stage (int64 [M]), updates (int32 [M,N]: optimisation steps each kept patch received) and a
ledger (schedule, active tokens per iteration, wall-clock of the inversion loop, peak memory,
device, versions, seed, teacher provenance). Every option is checked before any work.
"""
from __future__ import annotations

import argparse

import torch

from pri.checks import seed as check_seed
from pri.core.engine import InversionConfig, invert
from pri.core.runtime import derive_seed, set_threads
from pri.errors import PriError
from pri.files.io import atomic_torch_save, check_writable
from pri.files.models import HUB, hub_checkpoint, load_model
from pri.options import INVERSION, add_runtime_options, add_schedule_arguments, specs_from_args

DEFAULTS = {k: INVERSION[k] for k in ("lr", "tv_weight", "jitter", "seed", "score_layer")}  # InversionConfig's


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--model", required=True, help="timm ViT name (e.g. deit_tiny_patch16_224) or a small ViT of the suite (vit_pico_patch4_28, ...)")
    p.add_argument("--checkpoint", help="teacher weights (.pth/.pt loaded with weights_only=True, or .safetensors; 'hub': timm's pretrained weights for --model from the Hugging Face hub or its local cache; a checkpoint at another image size has its position embedding resampled, as timm does); without it the teacher keeps random weights drawn from --seed and the ledger says random-init")
    p.add_argument("--num-classes", type=int, help="classes of the teacher's head (default: the checkpoint's or the model's)")
    p.add_argument("--img-size", type=int, help="input side in pixels, a multiple of the patch size (default: the checkpoint's or the model's)")
    add_schedule_arguments(p)
    p.add_argument("--score-layer", type=int, default=d["score_layer"], help="block whose CLS attention row scores the patches (negative: from the end)")
    p.add_argument("--iterations", type=int, required=True, help="inversion iterations T")
    p.add_argument("--batch", type=int, required=True, help="output images; for PRI the trajectories are batch // v")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of init, augmentation and random scores (and of random teacher weights)")
    p.add_argument("--label-seed", type=int, default=None, help="seed of the class order (default: --seed); give every method of a seed the same one")
    p.add_argument("--part", type=int, default=0, help="this job's index among the --parts jobs of one seed: class runs continue across them")
    p.add_argument("--parts", type=int, default=1, help="inversion jobs of one seed whose labels are balanced together")
    p.add_argument("--classes", type=int, nargs="+", metavar="C", help="invert only these classes (e.g. one class for one-class distillation)")
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate on the pixels")
    p.add_argument("--tv-weight", type=float, default=d["tv_weight"], help="weight of the total-variation prior")
    p.add_argument("--jitter", type=float, default=d["jitter"], help="max random roll as a fraction of the image side, in [0, 0.5) (rounded to whole patches)")
    p.add_argument("--no-flip", action="store_true", help="disable the random horizontal flip")
    add_runtime_options(p, inversion=True)
    p.add_argument("--out", required=True, help="pool file to write (written to a temporary name, renamed when complete)")


def check_options(args) -> None:
    """Everything that can be checked without the model, before any work."""
    for opt in ("seed", "label_seed"):
        if getattr(args, opt) is not None:
            check_seed(getattr(args, opt), "--" + opt.replace("_", "-"))
    from pri import checks

    checks.positive(args.lr, "--lr")
    checks.non_negative(args.tv_weight, "--tv-weight")
    checks.number(args.jitter, "--jitter", 0, 0.5, hi_open=True)  # a fraction of the image side
    checks.iterations(args.iterations, "--iterations")
    checks.integer(args.batch, "--batch", 1)
    if args.num_classes is not None:
        checks.integer(args.num_classes, "--num-classes", 2)
    if args.parts < 1 or not 0 <= args.part < args.parts:
        raise PriError("--part", f"must lie in [0, --parts) = [0, {args.parts}), got {args.part}")
    from pri.files.io import check_distinct

    check_distinct({"--out": args.out}, {"--checkpoint": args.checkpoint if args.checkpoint else None})
    check_writable(args.out, "--out")
    checks.fits_memory(args.batch, "--batch", fix="(or split the images over jobs with --part/--parts)")


def load_teacher(args):
    """The teacher as given, or random weights drawn from the seed (so a run is reproducible)."""
    init_seed = None
    if not args.checkpoint:
        init_seed = derive_seed(args.seed, "teacher")
        torch.manual_seed(init_seed)
    path, hub_id = args.checkpoint, None
    if path == HUB:
        path, hub_id = hub_checkpoint(args.model, "--checkpoint")
    teacher = load_model(args.model, path, num_classes=args.num_classes, img_size=args.img_size)
    if init_seed is not None:
        teacher.provenance["init_seed"] = init_seed
    if hub_id:
        teacher.provenance["hub_id"] = hub_id
    from pri.core.vit import num_patches

    n, depth = num_patches(teacher.model), len(teacher.model.blocks)
    if not -depth <= args.score_layer < depth:
        raise PriError("--score-layer", f"{args.model} has {depth} blocks: give a block in [{-depth}, {depth - 1}], "
                       f"got {args.score_layer}")
    if args.classes is not None:
        bad = [c for c in args.classes if not 0 <= c < teacher.num_classes]
        if bad or len(set(args.classes)) != len(args.classes):
            raise PriError("--classes", f"give distinct classes of the teacher's 0..{teacher.num_classes - 1}, got "
                           f"{args.classes}")
    return teacher, n


def run(args) -> int:
    set_threads(args.threads)
    check_options(args)
    (spec, options), = specs_from_args(args)
    teacher, n = load_teacher(args)
    schedule = spec.build(n, args.iterations, options)
    schedule.validate(n, args.iterations, args.batch)
    per = schedule.images_per_trajectory()
    if args.batch % per:
        raise PriError("--batch", f"{spec.tag} writes {per} images per trajectory: give a multiple of {per} "
                       f"(e.g. {max(per, args.batch - args.batch % per)}), got {args.batch}")
    cfg = InversionConfig(iterations=args.iterations, batch=args.batch, seed=args.seed, lr=args.lr,
                          tv_weight=args.tv_weight, jitter=args.jitter, flip=not args.no_flip,
                          score_layer=args.score_layer, device=args.device, dtype=args.dtype,
                          tf32=not args.no_tf32, graphs="off" if args.no_graphs else "auto",
                          progress=not args.no_progress, label_seed=args.label_seed, part=args.part,
                          parts=args.parts, classes=tuple(args.classes) if args.classes else None)
    pool = invert(teacher, schedule, cfg)
    pool["ledger"]["tag"] = spec.tag
    atomic_torch_save(pool, args.out)
    led = pool["ledger"]
    print(f"{spec.tag}: {led['images_out']} images, {led['wall_seconds']:.2f} s loop "
          f"({led['seconds_per_image'] * 1e3:.1f} ms/image) on {led['device']} -> {args.out}")
    return 0
