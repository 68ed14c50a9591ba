"""Cost model, fvcore MACs and wall-clock per generated image of DMI, SMI and PRI schedules.

``--what cost`` is the analytic model (pri/measure/cost.py: MACs by group, ideal ratios, Theorem 1);
``flops`` counts the sparse forward with fvcore at each distinct active count (pri/measure/flops.py);
``time`` measures the inversion loop per generated image (pri/measure/timing.py), ``full`` (the real
loop, repeated) or ``stage-sampled`` (each distinct active count's step timed after warm-up
and integrated over the schedule; how paper scale is measured on a CPU). ``auto`` is full on a
GPU and stage-sampled on a CPU. One schedule (``--method``) or many (``--schedules``) per job.
Every number in the JSON carries its provenance: model, weights (random-init or sha256), mode,
device, dtype, versions, T, batch and the schedule's parameters.
"""
from __future__ import annotations

import argparse
import time

import torch

from pri.core.engine import InversionConfig
from pri.core.runtime import device_name, resolve_device, set_threads, versions
from pri.core.runtime import progress as progress_bar
from pri.core.schedules import PRI, IdealSMI, Schedule, Spec, theorem1_companions
from pri.errors import PriError
from pri.files.io import atomic_write_json
from pri.measure.cost import (BACKWARD, GROUPS, dims_dict, dims_of, ideal_ratios, schedule_cost, standard_schedules,
                              theorem1)
from pri.measure.timing import MODES, REPEATS, STEPS, WARMUP, resolve_mode
from pri.options import add_runtime_options, add_schedule_arguments, specs_from_args

WHATS = ("cost", "flops", "time")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="timm ViT name (e.g. deit_tiny_patch16_224) or a small ViT of the suite")
    p.add_argument("--checkpoint", help="teacher weights (only timing reads them; without it: random-init, said in the provenance)")
    p.add_argument("--num-classes", type=int, help="classes of the head (default: the checkpoint's or the model's)")
    p.add_argument("--img-size", type=int, help="input side in pixels (default: the model's)")
    add_schedule_arguments(p, many=True)
    p.add_argument("--iterations", type=int, default=4000, help="inversion iterations T")
    p.add_argument("--batch", type=int, default=128, help="output images per batch (PRI: batch // v trajectories)")
    p.add_argument("--what", nargs="+", default=["all"], choices=list(WHATS) + ["all"], help="what to measure")
    p.add_argument("--mode", default="auto", choices=list(MODES) + ["auto"], help="timing mode (auto: full on GPU, stage-sampled on CPU)")
    p.add_argument("--steps", type=int, default=STEPS, help="timed steps per block (stage-sampled)")
    p.add_argument("--warmup", type=int, default=WARMUP, help="warm-up steps per stage (stage-sampled) or before the runs (full)")
    p.add_argument("--repeats", type=int, default=REPEATS, help="timed blocks per stage (stage-sampled) or runs (full); the median is reported")
    p.add_argument("--backward", default="convention", choices=list(BACKWARD), help="step = 2x forward (convention) or per-operator (exact) MACs")
    p.add_argument("--seed", type=int, default=0, help="seed of the timed inversions")
    add_runtime_options(p, inversion=True)
    p.add_argument("--out", required=True, help="JSON to write (atomically)")


def resolve_what(what) -> tuple:
    what = [what] if isinstance(what, str) else list(what)
    if "all" in what:
        return WHATS
    bad = [w for w in what if w not in WHATS]
    if bad or not what:
        raise PriError("--what", f"unknown {bad or what}: choose from {', '.join(WHATS)} or all")
    return tuple(w for w in WHATS if w in what)


def schedules_from_args(args, n: int) -> dict:
    """``{tag: schedule}`` of the command line, with the SMI* companions of its PRI tags (Theorem 1)."""
    out = {}
    for spec, options in specs_from_args(args, many=True):
        if spec is None:
            bad = [v for v in args.vs if not 1 <= v <= min(n, args.iterations)]
            if bad:
                raise PriError("--vs", f"division factors must lie in [1, {min(n, args.iterations)}] (the model has {n} "
                               f"patches, T = {args.iterations}); got {bad}")
            out.update(standard_schedules(n, args.iterations, vs=tuple(args.vs)))
        else:
            out[spec.tag] = spec.build(n, args.iterations, options)
    for tag in theorem1_companions(out):
        out.setdefault(tag, Spec.parse(tag).build(n, args.iterations))
    return out


def efficiency_table(model_name: str, schedules: dict, iterations: int = 4000, batch: int = 128,
                     what=("cost", "flops", "time"), mode: str = "auto", steps: int = STEPS, warmup: int = WARMUP,
                     repeats: int = REPEATS, device: str = "auto", dtype: str = "fp32", checkpoint: str | None = None,
                     img_size: int | None = None, num_classes: int | None = None, backward: str = "convention",
                     tf32: bool = True, graphs: bool = True, seed: int = 0, progress: bool = True,
                     details: dict | None = None, teacher=None) -> list:
    """One flat row per schedule tag: provenance, schedule parameters, analytic MACs per image
    (``cost_*``), fvcore MACs per image (``flops_*``) and seconds per image (``time_*``).

    ``schedules`` maps tags to Schedule objects (see pri.measure.cost.standard_schedules). If
    ``details`` is a dict, per-schedule nested results (stage timings, skipped operators,
    profiles), Theorem 1 and the ideal ratios are put into it. ``teacher``: an already loaded
    pri.core.engine.Teacher of ``model_name`` (else it is loaded here)."""
    from pri.files.models import load_model

    what = resolve_what(what)
    dev = _check_table_args(schedules, iterations, batch, backward, device, dtype)
    tmode = resolve_mode(mode, dev) if "time" in what else None
    if teacher is None:
        teacher = load_model(model_name, checkpoint, num_classes=num_classes, img_size=img_size)
    d = dims_of(teacher.model)
    d = type(d)(**{**dims_dict(d), "name": model_name})
    n = d.num_patches
    for tag, s in schedules.items():
        try:
            s.validate(n, iterations, batch)
        except PriError as e:
            raise PriError(e.option, f"schedule {tag!r}: {e.message}") from e
    prov = teacher.provenance
    base = {
        "model": model_name, "weights": prov.get("sha256", "random-init"), "checkpoint": prov.get("checkpoint"),
        "num_patches": n, "embed_dim": d.embed_dim, "depth": d.depth, "img_size": prov.get("img_size"),
        "iterations": iterations, "batch": batch, "backward": backward, "device": device_name(dev), "dtype": dtype,
        "tf32": bool(tf32 and dev.type == "cuda"), **versions(),
    }
    rows = {tag: {**base, "tag": tag, **_params(s), "images_per_trajectory": s.images_per_trajectory(),
                  "trajectories": s.trajectories(batch), "images_out": s.trajectories(batch) * s.images_per_trajectory()}
            for tag, s in schedules.items()}
    det = {tag: {} for tag in schedules}

    if "cost" in what:
        _cost_columns(rows, det, d, schedules, iterations, backward)
    if "flops" in what:
        _flops_columns(rows, det, teacher, schedules, iterations, backward, "cost" in what, progress)
    if "time" in what:
        cfg = InversionConfig(iterations=iterations, batch=batch, seed=seed, device=device, dtype=dtype, tf32=tf32,
                              graphs="auto" if graphs else "off", progress=False)
        _time_columns(rows, det, teacher, schedules, cfg, tmode, steps, warmup, repeats, dev, progress)
    if details is not None:
        details.update(schedules=det, dims=dims_dict(d))  # the wall-clock: in the timing side file
        if "cost" in what:
            vs = sorted({s.v for s in schedules.values() if isinstance(s, PRI)}) or [2, 4, 7]
            vs = [v for v in vs if 1 < v <= n and v <= iterations]
            details["theorem1"] = [theorem1(d, v, iterations) for v in vs]
            details["ideal_ratios"] = {str(v): r for v, r in ideal_ratios(d, iterations, vs=vs).items()}
    return list(rows.values())


def _check_table_args(schedules: dict, iterations: int, batch: int, backward: str, device: str, dtype: str):
    """The device, once every argument of efficiency_table is checked (errors name the option)."""
    if iterations < 1:
        raise PriError("--iterations", f"must be >= 1 (got {iterations})")
    if batch < 1:
        raise PriError("--batch", f"must be >= 1 (got {batch})")
    if backward not in BACKWARD:
        raise PriError("--backward", f"unknown {backward!r}: choose {' or '.join(BACKWARD)}")
    if not schedules:
        raise PriError("--schedules", "no schedules given")
    for tag, s in schedules.items():
        if not isinstance(s, Schedule):
            raise PriError("--schedules", f"{tag!r} is not a Schedule ({type(s).__name__})")
    dev = resolve_device(device)
    if dtype not in ("fp32", "bf16"):
        raise PriError("--dtype", f"unknown dtype {dtype!r}: choose fp32 or bf16")
    return dev


def _cost_columns(rows: dict, det: dict, d, schedules: dict, iterations: int, backward: str) -> None:
    """The cost model's MACs per image (``cost_*``) of every schedule."""
    for tag, s in schedules.items():
        c = schedule_cost(d, s, iterations, backward)
        r = rows[tag]
        r.update({f"cost_macs_{g}": c["macs_per_image"][g] for g in GROUPS})
        r.update(cost_macs_total=c["total"], cost_macs_compared=c["compared"], cost_macs_ideal=c["ideal"],
                 cost_macs_score=c["score_macs_per_image"], mean_active=c["mean_active"])
        det[tag]["profile"] = c["profile"]


def _flops_columns(rows: dict, det: dict, teacher, schedules: dict, iterations: int, backward: str, with_cost: bool,
                   progress: bool) -> None:
    """fvcore's MACs per image (``flops_*``), each distinct forward counted once."""
    from pri.measure.cost import schedule_profile
    from pri.measure.flops import FlopCounter

    fc, n = FlopCounter(teacher.model), next(iter(rows.values()))["num_patches"]
    todo = set()
    for s in schedules.values():
        prof = schedule_profile(s, n, iterations)
        todo |= {(k, False) for k in prof["steps"]} | {(k, True) for k in prof["scores"]}
    bar = progress_bar(len(todo), progress, "flops (fvcore)", unit="count")
    for k, sc in sorted(todo, reverse=True):
        fc.forward(k, score=sc)
        bar.update(1)
    bar.close()
    for tag, s in schedules.items():
        f = fc.schedule(s, iterations, backward)
        r = rows[tag]
        r.update({f"flops_macs_{g}": f["macs_per_image"][g] for g in GROUPS})
        r.update(flops_macs_total=f["total"], flops_macs_compared=f["compared"],
                 flops_skipped_ops=",".join(sorted(f["skipped_ops"])))
        if with_cost:
            r["flops_over_cost_compared"] = f["compared"] / r["cost_macs_compared"]
        det[tag]["flops_skipped_ops"] = f["skipped_ops"]


def _time_columns(rows: dict, det: dict, teacher, schedules: dict, cfg, tmode: str, steps: int, warmup: int,
                  repeats: int, dev, progress: bool) -> None:
    """Measured seconds per image (``time_*``) of every schedule."""
    from pri.measure.timing import time_schedules

    res = time_schedules(teacher, schedules, cfg, mode=tmode, steps=steps, warmup=warmup, repeats=repeats,
                         progress=progress)
    for tag, t in res.items():
        r = rows[tag]
        r.update(time_mode=t["mode"], time_seconds_per_image=t["seconds_per_image"],
                 time_seconds_per_image_samples=t["seconds_per_image_samples"],
                 time_loop_seconds=t["loop_seconds"], time_images_out=t["images_out"],
                 time_peak_memory_mb=t["peak_memory_mb"], time_peak_memory_kind=t["peak_memory_kind"],
                 time_device=t["device"], time_dtype=t["dtype"], time_cuda_graphs=t["cuda_graphs"],
                 time_steps=steps if t["mode"] == "stage-sampled" else None, time_warmup=warmup,
                 time_repeats=repeats, time_threads=torch.get_num_threads() if dev.type == "cpu" else None)
        det[tag]["time"] = t


def _params(s: Schedule) -> dict:
    p = dict(s.params())
    for k, v in list(p.items()):
        if isinstance(v, (list, tuple)):
            p[k] = " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    p.setdefault("v", None)
    p.setdefault("score", getattr(s, "score", None))
    if isinstance(s, IdealSMI):
        p["keep"] = s.keep
    return p


def run(args) -> int:
    from pri.checks import seed as check_seed
    from pri.files.io import check_distinct, check_writable, with_timing

    set_threads(args.threads)
    what = resolve_what(args.what)
    check_seed(args.seed)
    from pri.checks import fits_memory, integer, iterations

    for opt in ("steps", "warmup", "repeats", "batch"):
        integer(getattr(args, opt), "--" + opt, 0 if opt == "warmup" else 1)
    iterations(args.iterations, "--iterations")
    fits_memory(args.batch, "--batch")
    check_distinct({"--out": args.out}, {"--checkpoint": args.checkpoint})
    check_writable(args.out, "--out")
    from pri.core.vit import num_patches
    from pri.files.models import load_model

    teacher = load_model(args.model, args.checkpoint, num_classes=args.num_classes, img_size=args.img_size)
    schedules = schedules_from_args(args, num_patches(teacher.model))
    dev = resolve_device(args.device)
    details: dict = {}
    t0 = time.perf_counter()
    rows = efficiency_table(args.model, schedules, iterations=args.iterations, batch=args.batch, what=what,
                            mode=args.mode, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                            device=args.device, dtype=args.dtype, checkpoint=args.checkpoint, img_size=args.img_size,
                            num_classes=args.num_classes, backward=args.backward, tf32=not args.no_tf32,
                            graphs=not args.no_graphs, seed=args.seed, progress=not args.no_progress, details=details,
                            teacher=teacher)
    wall = time.perf_counter() - t0
    out = {
        "format": "pri-efficiency/1",
        "provenance": {"model": args.model, "weights": rows[0]["weights"], "checkpoint": rows[0]["checkpoint"],
                       "device": device_name(dev), "dtype": args.dtype, "mode": rows[0].get("time_mode"),
                       "what": list(what), "iterations": args.iterations, "batch": args.batch,
                       "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                       "backward": args.backward, "threads": torch.get_num_threads(), **versions()},
        "rows": rows,
        "details": details,
    }
    atomic_write_json(args.out, out)
    with_timing(args.out, {"wall_seconds": wall})
    _print_summary(rows, what)
    print(f"pri efficiency: {len(rows)} schedule(s) of {args.model} in {wall:.1f} s -> {args.out}")
    return 0


def _print_summary(rows, what) -> None:
    from pri.measure.cost import speedups

    over = {key: speedups(rows, key) for key in ("cost_macs_total", "time_seconds_per_image")}
    head = f"{'schedule':<16s}"
    if "cost" in what:
        head += f" {'GMAC/img':>10s} {'x DMI':>6s}"
    if "flops" in what:
        head += f" {'fvcore/model':>12s}" if "cost" in what else f" {'fvcore GMAC':>12s}"  # the ratio needs cost
    if "time" in what:
        head += f" {'s/img':>9s} {'x DMI':>6s} {'mode':>13s}"
    print(head)
    nan = float("nan")
    for r in rows:
        line = f"{r['tag']:<16s}"
        if "cost" in what:
            line += f" {r['cost_macs_total'] / 1e9:>10.1f} {over['cost_macs_total'].get(r['tag'], nan):>6.2f}"
        if "flops" in what:
            line += (f" {r['flops_over_cost_compared']:>12.4f}" if "cost" in what
                     else f" {r['flops_macs_total'] / 1e9:>12.4f}")
        if "time" in what:
            line += (f" {r['time_seconds_per_image']:>9.4f} {over['time_seconds_per_image'].get(r['tag'], nan):>6.2f}"
                     f" {r['time_mode']:>13s}")
        print(line)
