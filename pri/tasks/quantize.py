"""Data-free post-training quantisation (fake-quant) of a ViT teacher; top-1/top-5 on the real test set.

The protocol is SMI's public quantisation, whose modules are PSAQ-ViT's (docs/methods.md, section
"Quantisation"); the code here is written fresh. The quantisers, the block forward and the
calibration forward are in pri.tasks.fakequant; this module is the command around them.

Weights (symmetric, per output channel) and activations (asymmetric, per tensor, at every site
of the forward): the formulas and sites are in pri.tasks.fakequant's docstring.

Calibration: one no-grad float forward of ``--calib-images`` images (PSAQ: observers on,
quantisers off). Pool images are fed sparsely: CLS plus the kept patches of each image's mask, each
with its own position embedding; images are grouped by mask size, one forward per group, the
running min/max accumulating over all. ``--pre-gather sparse`` (default): the quantisers before the
token gather (input image, patch embedding, position embedding) observe only the kept patches (and
CLS's position); ``dense`` is SMI's code: they observe every patch, zero pixels included.
Baselines: ``noise`` (N(0, 1) images in the normalised input space, dense; the lower bound) and
``real`` (images of the teacher's dataset's train split, no augmentation, dense; the upper bound).
Evaluation: dense fake-quant forward on the real test split (pri.tasks.train.evaluate), top-1 and top-5,
with the float teacher's alongside; each row also records which test images it classified
correctly (``correct_bits``), so that the analysis can pair two calibrations image by image.

Choices where the protocol is silent:
- The ranges come from a float forward, so they do not depend on the bit width: one calibration
  per draw serves every (w_bits, a_bits) setting; each setting derives its own scales from it.
- As in PSAQ's observer the range is not widened to contain 0: an all-positive tensor gets zp = 0
  and the grid [0, max - min]; an all-negative one zp = 2^b - 1 and [-(max - min), 0].
- Attention logits are (q @ k^T) * head_dim^-0.5, as PSAQ computes them; the final LayerNorm runs
  on the CLS token only (a per-token norm: the same numbers as norm(x)[:, 0]).
- Draw d picks its images (or noise) with a generator seeded from (--seed, d).
- Pool pixels and real images are normalised with the teacher's mean/std, as pri distill does.
- Supported: timm's pre-norm ViT with a class token and an absolute position embedding covering
  it (DeiT, the suite's small ViTs). Register tokens, no_embed_class, LayerScale, a norm_pre,
  pooling other than the CLS token, other block types are refused by name (check_supported).
- Speed (CPU): weights are dequantised once per w_bits, activations are fake-quantised in place,
  128 images per forward keep the activations of a small ViT in cache.

Anchors with this quantiser (ImageNet top-1, W8A8 / W4A8; PSAQ-ViT's README and a third-party rerun
of its code): DeiT-T real 71.21 / 65.25, noise 10.31 / 7.83, FP 72.21; DeiT-S real 76.13 / 72.34,
FP 79.85; DeiT-B real 78.68 / 76.28, FP 81.85. Real and good synthetic calibration land within about
0.5 points of each other; noise collapses.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from pri.checks import settings_of
from pri.core.vit import num_patches
from pri.errors import PriError
from pri.files.io import input_path
from pri.options import add_runtime_options
from pri.tasks.fakequant import (CPU_CHUNK, PRE_GATHER, QuantViT, activation_sites, calibrate, check_supported, chunked,
                                 layer_weights, weight_layers)

CALIBRATIONS = ("pool", "noise", "real")


@dataclass
class QuantizeConfig:
    """What a quantisation job is asked (``pri quantize``'s options, whose defaults are these)."""
    teacher: str
    out: str | None = None
    teacher_model: str | None = None
    pool: list | None = None
    calibration: str = "pool"
    calib_images: int = 32
    balance_unit: int | None = None
    w_bits: list = field(default_factory=lambda: [8])
    a_bits: list = field(default_factory=lambda: [8])
    classes: list | None = None
    draws: int = 1
    pre_gather: str = "sparse"
    dataset: str | None = None
    data_root: str | None = None
    split: str = "test"
    limit_test: int | None = None
    eval_batch: int = 512
    seed: int = 0
    allow_other_teacher: bool = False
    threads: int | None = None
    device: str = "auto"
    no_progress: bool = False
    no_fp: bool = False

    @classmethod
    def from_args(cls, args) -> "QuantizeConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def _default(name: str):
    f = next(f for f in fields(QuantizeConfig) if f.name == name)
    return f.default_factory() if callable(f.default_factory) else f.default

# ---------------------------------------------------------------------------------------------
# the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pri.files.pool import add_balance_unit

    p.add_argument("--teacher", required=True, metavar="PATH",
                   help="the teacher: a suite checkpoint (pri teacher) or a state_dict fitting --teacher-model")
    p.add_argument("--teacher-model", default=None,
                   help="teacher architecture (default: the one recorded in the suite checkpoint or the pool)")
    p.add_argument("--pool", nargs="+", default=None, metavar="PATH",
                   help="pool file(s) written by pri invert, calibration images drawn from their union "
                        "(--calibration pool)")
    p.add_argument("--calibration", choices=CALIBRATIONS, default=_default("calibration"),
                   help="calibration images: synthetic pool images (fed sparsely), Gaussian noise in the normalised "
                        "input space (lower bound) or real training images (upper bound)")
    p.add_argument("--calib-images", type=int, default=_default("calib_images"),
                   help="images in the calibration batch, balanced over the classes in whole trajectories (pool) or "
                        "images (real), in units of --balance-unit")
    add_balance_unit(p, "--calib-images", "; 1 for real images")
    p.add_argument("--w-bits", type=int, nargs="+", default=_default("w_bits"), metavar="B",
                   help="weight bits, one per setting, paired position by position with --a-bits (one value is "
                        "broadcast)")
    p.add_argument("--a-bits", type=int, nargs="+", default=_default("a_bits"), metavar="B",
                   help="activation bits, one per setting (e.g. --w-bits 8 4 --a-bits 8 8: W8A8 and W4A8)")
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="C",
                   help="deal the calibration images to these classes only (the classes the pools were inverted "
                        "for with pri invert --classes; default: every class)")
    p.add_argument("--draws", type=int, default=_default("draws"),
                   help="calibration draws: each picks other calibration images, seeded from --seed and the draw")
    p.add_argument("--pre-gather", choices=PRE_GATHER, default=_default("pre_gather"),
                   help="with a pool: the quantisers before the token gather (input, patch embedding, position "
                        "embedding) observe only the kept patches (sparse) or every patch, zeros included (dense, "
                        "SMI's code)")
    p.add_argument("--dataset", default=None,
                   help="real dataset whose test split scores the model (default: the teacher's training dataset "
                        "recorded in its checkpoint); its train split gives --calibration real")
    p.add_argument("--data-root", default=None, help="folder holding the real dataset (see pri teacher --data-root)")
    p.add_argument("--split", choices=("test", "val"), default=_default("split"),
                   help="split that scores the model: test (headlines) or val (held out of the training split: for "
                        "choosing a bit setting without looking at test)")
    p.add_argument("--limit-test", type=int, default=None,
                   help="evaluate on only the first this many test images (smoke tests; headlines use all)")
    p.add_argument("--eval-batch", type=int, default=_default("eval_batch"), help="batch size of evaluations and calibration forwards")
    p.add_argument("--seed", type=int, default=_default("seed"), help="seed of the calibration images")
    p.add_argument("--allow-other-teacher", action="store_true",
                   help="allow pools inverted from another teacher than --teacher")
    add_runtime_options(p)
    p.add_argument("--no-fp", action="store_true",
                   help="skip the float teacher's evaluation (a job that quantises from many pools takes it once)")
    p.add_argument("--out", required=True, help="metrics JSON to write")


def check_options(args) -> list[tuple[int, int]]:
    """Every option that can be checked before any work; returns the (w_bits, a_bits) settings."""
    from pri.checks import seed as check_seed
    from pri.files.io import check_distinct, check_writable

    from pri.checks import fits_memory, integer, option_of

    settings = settings_of(args.w_bits, args.a_bits)
    for opt in ("calib_images", "draws", "eval_batch", "limit_test", "balance_unit"):
        if getattr(args, opt) is not None:
            integer(getattr(args, opt), option_of(opt), 1)
    fits_memory(args.calib_images, "--calib-images", bytes_each=4)  # a float32 pixel at least
    check_seed(args.seed)
    if args.calibration == "pool" and not args.pool:
        raise PriError("--pool", "--calibration pool needs pool files: give --pool PATH ... (or --calibration noise "
                       "or real)")
    if args.calibration != "pool" and args.pool:
        raise PriError("--pool", f"--calibration {args.calibration} reads no pool: drop --pool, or use "
                       "--calibration pool")
    check_distinct({"--out": args.out}, {"--teacher": args.teacher, "--pool": args.pool})
    check_writable(args.out, "--out")
    return settings


def packed_correct(correct: torch.Tensor) -> dict:
    """Per-test-image correctness of one evaluation, packed for JSON: ``correct_bits`` (base64 of
    the bits, most significant first, in the test set's order) and ``num_images``; the analysis
    pairs calibrations over the same images with it (analysis.collect.correct_of)."""
    import base64

    bits = np.packbits(correct.to(torch.bool).cpu().numpy().astype(np.uint8))
    return {"correct_bits": base64.b64encode(bits.tobytes()).decode("ascii"), "num_images": int(correct.numel())}


def draw_generator(seed: int, draw: int) -> tuple[torch.Generator, int]:
    """The generator of calibration draw ``draw`` (and its seed), independent across (seed, draw) pairs."""
    from pri.core.runtime import derive_seed

    s = derive_seed(seed, "calibration", draw)
    return torch.Generator().manual_seed(s), s


def load_teacher(args, pools: list[dict]):
    """The teacher to quantise (its architecture from --teacher-model, the checkpoint or the pools' ledgers)."""
    from pri.files.models import load_model, read_checkpoint

    tname = args.teacher_model
    if tname is None:
        obj = read_checkpoint(args.teacher, "--teacher")
        tname = obj.get("arch") if isinstance(obj.get("arch"), str) else None
        del obj
        tname = tname or next((m for m in ((p["ledger"].get("teacher") or {}).get("model") for p in pools) if m),
                              None)
        if tname is None:
            raise PriError("--teacher-model", f"{args.teacher} does not record its architecture: pass --teacher-model")
    teacher = load_model(tname, args.teacher, option="--teacher", frozen=True, model_option="--teacher-model")
    try:
        check_supported(teacher.model)
    except ValueError as e:
        raise PriError("--teacher-model", f"{tname} cannot be quantised here: {e}") from e
    return teacher, tname


class Calibration:
    """The calibration batches of one run: pool images (whole trajectories, balanced over the
    classes), real training images (the same histogram) or Gaussian noise, one batch per draw."""

    def __init__(self, args, teacher, pools: list[dict], ds_name: str):
        from pri.files.models import sha256_file
        from pri.files.pool import check_teacher, check_unit, images_per_trajectory, trajectory_ids

        m = teacher.model
        self.args, self.ds_name = args, ds_name
        self.img, self.ch, self.N = int(m.patch_embed.img_size[0]), int(m.patch_embed.proj.in_channels), num_patches(m)
        self.mean, self.std = list(teacher.mean), list(teacher.std)
        self.pool_info = []
        for path, pool in zip(args.pool or [], pools):
            check_teacher(path, pool, teacher, args.teacher, option="--teacher", allow_other=args.allow_other_teacher)
            C, H, W_ = pool["images"].shape[1:]
            if (C, H, W_) != (self.ch, self.img, self.img) or pool["masks"].shape[1] != self.N:
                raise PriError("--pool", f"{path}: images are {C}x{H}x{W_} with {pool['masks'].shape[1]} patches; the "
                               f"teacher takes {self.ch}x{self.img}x{self.img} with {self.N} patches")
            led = pool["ledger"]
            self.pool_info.append({"path": input_path(path), "sha256": sha256_file(path),
                                   "images": len(pool["labels"]), "method": led.get("method"), "v": led.get("v"),
                                   "seed": led.get("seed")})
        per_traj = 1  # real images (noise has no classes)
        if pools:
            self.images, self.masks = torch.cat([p["images"] for p in pools]), torch.cat([p["masks"] for p in pools])
            self.where = [(i, j) for i, p in enumerate(pools) for j in range(len(p["labels"]))]
            if len(self.images) < args.calib_images:
                raise PriError("--calib-images", f"asked for {args.calib_images} calibration images but the pool(s) "
                               f"hold only {len(self.images)}: lower --calib-images or give more --pool files")
            self.labels, self.traj = torch.cat([p["labels"] for p in pools]), trajectory_ids(pools)
            per_traj = images_per_trajectory(self.traj)
        self.unit = per_traj if args.balance_unit is None else args.balance_unit
        nc = teacher.num_classes
        self.classes = range(nc) if args.classes is None else sorted(set(args.classes))
        if not all(0 <= c < nc for c in self.classes):
            raise PriError("--classes", f"give classes of the teacher's 0..{nc - 1}, got {args.classes}")
        if args.calibration != "noise":
            check_unit(args.calib_images, self.unit, per_traj, "--calib-images")

    def load_real(self, teacher) -> None:
        from pri.files.data import for_teacher

        if self.args.calibration == "real":
            _, self.train_x, train_y, self.train_meta = for_teacher(teacher, self.ds_name, self.args.data_root, "train")
            self.train_y = train_y.long()
            if len(self.train_y) < self.args.calib_images:
                raise PriError("--calib-images", f"{self.ds_name}'s train split holds only {len(self.train_y)} images")

    def batch(self, draw: int):
        """(normalised images, masks or None, provenance) of draw ``draw``."""
        from pri.files.data import batches, normalise, prepare
        from pri.files.pool import balanced_order, class_histogram

        args = self.args
        g, draw_seed = draw_generator(args.seed, draw)
        n = args.calib_images
        prov = {"kind": args.calibration, "seed": args.seed, "draw": draw, "draw_seed": draw_seed, "images": n,
                "pre_gather": args.pre_gather}
        if args.calibration == "noise":
            prov.update(feed="dense (--pre-gather has no effect)", what="N(0, 1) in the teacher's normalised input "
                        "space", tokens_fed=n * (self.N + 1))
            return torch.randn(n, self.ch, self.img, self.img, generator=g), None, prov
        hist = class_histogram(n, self.unit, self.classes, draw_seed)
        prov["class_histogram"] = {str(c): k for c, k in sorted(hist.items()) if k}
        if args.calibration == "real":
            order = balanced_order(self.train_y, torch.arange(len(self.train_y)), hist, draw_seed, "--calib-images")
            x, _ = next(batches(self.train_x, self.train_y, n, order=order))
            prov.update(feed="dense (--pre-gather has no effect)", split="train", dataset=self.ds_name,
                        source=self.train_meta["source"], sha256=self.train_meta["sha256"], indices=order.tolist(),
                        tokens_fed=n * (self.N + 1))
            return prepare(x, self.img, self.mean, self.std), None, prov
        order = balanced_order(self.labels, self.traj, hist, draw_seed, "--calib-images")
        masks = self.masks[order]
        ks = masks.sum(1)
        prov.update(feed="sparse: CLS + the kept patches, each with its own position embedding", pools=self.pool_info,
                    indices=[list(self.where[i]) for i in order.tolist()], mask_sizes=ks.tolist(),
                    tokens_fed=int((ks + 1).sum()),
                    groups={str(k): int((ks == k).sum()) for k in sorted(set(ks.tolist()))})
        return normalise(self.images[order], self.mean, self.std), masks, prov


def quantise_draws(args, model, cal: Calibration, settings, evaluate_with, fp: dict, device, chunk):
    """Every draw's calibration and every bit setting's evaluation: (rows, calibrations, timings)."""
    weights_by_bits: dict[int, dict] = {}
    calibrations, rows, times = [], [], {"calibration_seconds": [], "evaluation_seconds": [],
                                         "weight_quant_seconds": 0.0}
    for draw in range(args.draws):
        t0 = time.perf_counter()
        x, masks, prov = cal.batch(draw)
        ranges = calibrate(model, x.to(device), None if masks is None else masks.to(device), args.pre_gather,
                           args.eval_batch)
        times["calibration_seconds"].append(time.perf_counter() - t0)
        calibrations.append({**prov, "ranges": ranges})
        for w_bits, a_bits in settings:
            if w_bits not in weights_by_bits:
                t0 = time.perf_counter()
                weights_by_bits[w_bits] = layer_weights(model, w_bits)
                times["weight_quant_seconds"] += time.perf_counter() - t0
            ev, secs = evaluate_with(QuantViT(model, ranges, w_bits, a_bits, weights_by_bits[w_bits], chunk))
            times["evaluation_seconds"].append(secs)
            rows.append({"w_bits": w_bits, "a_bits": a_bits, "setting": f"W{w_bits}A{a_bits}", "draw": draw,
                         "top1": ev["top1"], "top5": ev["top5"], **packed_correct(ev["correct"]),
                         "top1_drop": None if fp["top1"] is None else fp["top1"] - ev["top1"],
                         "per_class": ev["per_class"], "calibration": prov})
            ref = "" if fp["top1"] is None else f" (FP {100 * fp['top1']:.2f}%)"
            print(f"pri quantize: W{w_bits}A{a_bits} draw {draw} ({args.calibration} calibration): top-1 "
                  f"{100 * ev['top1']:.2f}%{ref}, {secs:.1f} s", file=sys.stderr)
    return rows, calibrations, times


def summarise(settings, rows: list[dict]) -> list[dict]:
    out = []
    for w_bits, a_bits in settings:
        mine = [r for r in rows if (r["w_bits"], r["a_bits"]) == (w_bits, a_bits)]
        t1 = [r["top1"] for r in mine]
        out.append({"w_bits": w_bits, "a_bits": a_bits, "setting": f"W{w_bits}A{a_bits}", "draws": len(t1),
                    "top1_mean": float(np.mean(t1)), "top1_min": min(t1), "top1_max": max(t1),
                    "top5_mean": float(np.mean([r["top5"] for r in mine]))})
    return out


def what_is_quantised(model, chunk) -> dict:
    return {
        "weight_layers": weight_layers(model), "activation_sites": activation_sites(model),
        "weights": "symmetric, per output channel, min-max; biases float",
        "activations": "asymmetric, per tensor, running min/max of one float calibration forward per draw "
                       "(one forward per mask size); ranges shared by every bit setting",
        "float": "LayerNorm arithmetic (and q_norm/k_norm), fc1 output, softmax, biases",
        "evaluation": "dense fake-quant forward on the real test split",
        "cpu_chunk": chunk,
    }


@dataclass
class QuantizeResult:
    """What a quantisation job measured: the float teacher's evaluation, one row per (setting,
    draw), the calibrations, and what was quantised; ``teacher``, ``cal`` and ``test`` say from
    what; the seconds go to the timing side file."""
    fp: dict
    rows: list
    calibrations: list
    quantised: dict
    teacher: object  # pri.core.engine.Teacher
    teacher_name: str
    cal: "Calibration"
    test: dict
    device: torch.device
    timing: dict


def quantize(cfg: QuantizeConfig, settings: list[tuple[int, int]]) -> QuantizeResult:
    """The library function behind ``pri quantize``: calibrate the teacher's fake-quantised copy on
    the config's images (pool, noise or real), per draw, and score every (w_bits, a_bits) setting on
    the real split. Writes nothing."""
    from pri.core.runtime import setup_runtime, sync
    from pri.files.data import for_teacher
    from pri.files.pool import load_pool
    from pri.tasks.train import evaluate

    device, _ = setup_runtime(cfg.threads, cfg.device)
    pools = [load_pool(p, "--pool") for p in (cfg.pool or [])]
    teacher, tname = load_teacher(cfg, pools)
    model = teacher.model
    ds_name, test_x, test_y, test_meta = for_teacher(teacher, cfg.dataset, cfg.data_root, cfg.split, cfg.limit_test,
                                                     cfg.teacher)
    cal = Calibration(cfg, teacher, pools, ds_name)
    cal.load_real(teacher)
    model.to(device)
    chunk = CPU_CHUNK if device.type == "cpu" else None

    def evaluate_with(fwd) -> tuple[dict, float]:
        t0 = time.perf_counter()
        ev = evaluate(model, test_x, test_y, teacher.num_classes, cal.img, cal.mean, cal.std, device,
                      batch=cfg.eval_batch, progress=not cfg.no_progress, forward=fwd)
        sync(device)
        return ev, time.perf_counter() - t0

    if cfg.no_fp:
        fp, fp_seconds = {"top1": None, "top5": None, "per_class": None}, 0.0
    else:
        fp, fp_seconds = evaluate_with(lambda x: chunked(model, x, chunk))
    rows, calibrations, times = quantise_draws(cfg, model, cal, settings, evaluate_with, fp, device, chunk)
    test = {"dataset": ds_name, "split": cfg.split, "source": test_meta["source"], "sha256": test_meta["sha256"],
            "num_images": int(len(test_y)), "limit_test": cfg.limit_test}
    return QuantizeResult(fp, rows, calibrations, what_is_quantised(model, chunk), teacher, tname, cal, test, device,
                          {"fp_eval_seconds": fp_seconds, **times})


def run(args) -> int:
    """``pri quantize``: the options as a QuantizeConfig, checked; quantize; the metrics written."""
    from pri.core.runtime import device_name, versions
    from pri.files.io import atomic_write_json, with_timing

    t_start = time.perf_counter()
    cfg = QuantizeConfig.from_args(args)
    settings = check_options(cfg)
    res = quantize(cfg, settings)
    fp = res.fp
    atomic_write_json(cfg.out, {
        "fp_top1": fp["top1"], "fp_top5": fp["top5"], "fp_per_class": fp["per_class"],
        "rows": res.rows, "settings": summarise(settings, res.rows), "calibrations": res.calibrations,
        "calibration": cfg.calibration, "pre_gather": cfg.pre_gather, "calib_images": cfg.calib_images,
        "draws": cfg.draws, "seed": cfg.seed, "pools": res.cal.pool_info, "quantised": res.quantised,
        "teacher": {"path": input_path(cfg.teacher), "model": res.teacher_name, "provenance": res.teacher.provenance},
        "test": res.test, "versions": versions(), "device": device_name(res.device),
    })
    with_timing(cfg.out, {**res.timing, "wall_seconds": time.perf_counter() - t_start})
    return 0
