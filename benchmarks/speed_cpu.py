"""CPU speed of one inversion step at 100 %, 50 % and 25 % of the patches (a benchmark, not a test).

    python benchmarks/speed_cpu.py [--threads 1] [--repeats 7] [--steps 5] [--profile]

Prints, for deit_tiny_patch16_224 at batch 8 and vit_pico_patch4_28 at batch 64 (random
weights, fp32), the median step time over ``repeats`` blocks of ``steps`` steps (the engine's
own step: augmentation gather, sparse forward, CE + TV, backward, Adam, clamp) and its ratio to
the dense step. Targets: 50 % <= 0.55x and 25 % <= 0.30x of the dense step. Other processes may
load the CPU: the stages are interleaved round-robin, so that a burst of load hits every stage
alike, and medians are reported. ``--profile`` prints where the time goes at the dense and
the 25 % count (torch.profiler, self CPU time by operator) and the share of the step that does
not depend on the active count (work on the full image: augmentation gather, TV, Adam, clamp).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from pri.core.engine import InversionConfig, Inverter
from pri.core.schedules import DMI
from pri.files.models import load_model

CASES = (("deit_tiny_patch16_224", 8), ("vit_pico_patch4_28", 64))
FRACTIONS = (1.0, 0.5, 0.25)
TARGETS = {0.5: 0.55, 0.25: 0.30}


def bench(name: str, batch: int, steps: int, warmup: int, repeats: int) -> list[dict]:
    teacher = load_model(name)
    inv = Inverter(teacher, DMI(), InversionConfig(iterations=10, batch=batch, device="cpu", progress=False))
    n = inv.n
    counts = [max(1, int(round(n * f))) for f in FRACTIONS]
    steppers = {k: inv.stage_stepper(k) for k in counts}
    for k in counts:
        for _ in range(warmup):
            steppers[k]()
    samples = {k: [] for k in counts}
    for _ in range(repeats):  # round-robin: load bursts hit every count alike
        for k in counts:
            t0 = time.perf_counter()
            for _ in range(steps):
                steppers[k]()
            samples[k].append((time.perf_counter() - t0) / steps)
    dense = statistics.median(samples[counts[0]])
    rows = []
    for f, k in zip(FRACTIONS, counts):
        med = statistics.median(samples[k])
        rows.append({"model": name, "batch": batch, "fraction": f, "active": k, "step_ms": med * 1e3,
                     "min_ms": min(samples[k]) * 1e3, "ratio": med / dense, "target": TARGETS.get(f)})
    return rows


def profile(name: str, batch: int, steps: int = 5) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    teacher = load_model(name)
    inv = Inverter(teacher, DMI(), InversionConfig(iterations=10, batch=batch, device="cpu", progress=False))
    for k in (inv.n, max(1, inv.n // 4)):
        st = inv.stage_stepper(k)
        for _ in range(3):
            st()
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                st()
        print(f"\n== {name} batch {batch}, {k}/{inv.n} patches: self CPU time by operator ({steps} steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
    # the part of a step that does not scale with tokens: pixel-space work on the full image
    from pri.core.engine import Augment, total_variation

    x = inv.x
    src = inv.aug.pixel_src[1]
    parts = {
        "augment gather (fwd)": lambda: Augment.apply(x.detach(), src),
        "TV fwd+bwd": lambda: torch.autograd.grad(total_variation(x), x),
        "Adam step": lambda: inv.opt.step(),
        "clamp": lambda: x.detach().clamp(inv.lo, inv.hi),
    }
    x.grad = torch.zeros_like(x)
    print(f"\n== {name} batch {batch}: pixel-space work per step (independent of the active count)")
    for label, fn in parts.items():
        for _ in range(3):
            fn()
        ts = []
        for _ in range(20):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        print(f"  {label:<22s} {statistics.median(ts) * 1e3:8.3f} ms")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps per count")
    ap.add_argument("--repeats", type=int, default=7, help="timed blocks per count (median)")
    ap.add_argument("--only", choices=[c[0] for c in CASES], help="one model only")
    ap.add_argument("--profile", action="store_true", help="also profile the dense and 25 %% steps")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.repeats} blocks x {args.steps} steps per count, round-robin, medians")
    print(f"{'model':<24s} {'batch':>5s} {'patches':>9s} {'step ms':>9s} {'min ms':>8s} {'x dense':>8s} {'target':>7s}")
    ok = True
    for name, batch in CASES:
        if args.only and name != args.only:
            continue
        for r in bench(name, batch, args.steps, args.warmup, args.repeats):
            tgt = "" if r["target"] is None else f"<={r['target']:.2f}"
            hit = "" if r["target"] is None else (" ok" if r["ratio"] <= r["target"] else " MISS")
            ok &= r["target"] is None or r["ratio"] <= r["target"]
            print(f"{r['model']:<24s} {r['batch']:>5d} {r['active']:>4d} ({r['fraction']:4.0%}) {r['step_ms']:>9.2f} "
                  f"{r['min_ms']:>8.2f} {r['ratio']:>8.3f} {tgt:>7s}{hit}")
        if args.profile:
            profile(name, batch)
    print("targets met" if ok else "some targets missed (see --profile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
