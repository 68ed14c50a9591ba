"""Run DMI, SMI or PRI inversion on a timm ViT and write a pool file.

The pool is one file, loadable with torch.load(path, weights_only=True): a dict with images
(uint8 [M,C,H,W], pixels outside the mask exactly 0), masks (bool [M,N]), labels, trajectory,
stage (int64 [M]) and a ledger (schedule, active tokens per iteration, wall-clock of the
inversion loop, peak memory, device, versions, seed, teacher provenance).
"""
from __future__ import annotations

import argparse

from .engine import InversionConfig, invert
from .errors import PriError
from .io import atomic_torch_save, set_threads
from .models import load_model
from .schedules import add_schedule_arguments, specs_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="timm ViT name (e.g. deit_tiny_patch16_224) or a small ViT of the suite (vit_pico_patch4_28, ...)")
    p.add_argument("--checkpoint", help="teacher weights (.pth/.pt loaded with weights_only=True, or .safetensors); without it the teacher keeps random weights and the ledger says random-init")
    p.add_argument("--num-classes", type=int, help="classes of the teacher's head (default: the checkpoint's or the model's)")
    p.add_argument("--img-size", type=int, help="input side in pixels (default: the checkpoint's or the model's)")
    add_schedule_arguments(p)
    p.add_argument("--score-layer", type=int, default=-1, help="block whose CLS attention row scores the patches")
    p.add_argument("--iterations", type=int, required=True, help="inversion iterations T")
    p.add_argument("--batch", type=int, required=True, help="output images; for PRI the trajectories are batch // v")
    p.add_argument("--seed", type=int, default=0, help="seed of init, labels, augmentation and random scores")
    p.add_argument("--lr", type=float, default=0.25, help="Adam learning rate on the pixels")
    p.add_argument("--tv-weight", type=float, default=1e-4, help="weight of the total-variation prior")
    p.add_argument("--jitter", type=float, default=0.125, help="max random roll as a fraction of the image side (rounded to whole patches)")
    p.add_argument("--no-flip", action="store_true", help="disable the random horizontal flip")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="fp32, or bf16 autocast")
    p.add_argument("--no-tf32", action="store_true", help="disable TF32 matmuls on GPU")
    p.add_argument("--no-graphs", action="store_true", help="do not capture stages as CUDA graphs on GPU")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="pool file to write (written to a temporary name, renamed when complete)")


def run(args) -> int:
    set_threads(args.threads)
    (spec, options), = specs_from_args(args)
    teacher = load_model(args.model, args.checkpoint, num_classes=args.num_classes, img_size=args.img_size)
    from .vit import num_patches

    schedule = spec.build(num_patches(teacher.model), args.iterations, options)
    cfg = InversionConfig(iterations=args.iterations, batch=args.batch, seed=args.seed, lr=args.lr,
                          tv_weight=args.tv_weight, jitter=args.jitter, flip=not args.no_flip,
                          score_layer=args.score_layer, device=args.device, dtype=args.dtype,
                          tf32=not args.no_tf32, graphs="off" if args.no_graphs else "auto",
                          progress=not args.no_progress)
    pool = invert(teacher, schedule, cfg)
    pool["ledger"]["tag"] = spec.tag
    atomic_torch_save(pool, args.out)
    led = pool["ledger"]
    print(f"{led['method']}: {led['images_out']} images, {led['wall_seconds']:.2f} s loop "
          f"({led['seconds_per_image'] * 1e3:.1f} ms/image) on {led['device']} -> {args.out}")
    return 0
