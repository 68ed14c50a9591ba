"""Expected GPU hours per rule family of a config (default: config/paper.yaml).

An estimate, not a measurement: every step's MACs come from the suite's cost model (pri.cost),
and seconds from a two-parameter fit to the H200 step times in the suite's METHODS notes
(torch 2.11, bf16, batch 128, eager: DeiT-Ti 18.8 ms at 196 patches and 17.0 ms at 28,
DeiT-B 38.0 ms and 19.4 ms): seconds per step = overhead + 2 * MACs / throughput. The fit
gives about 15 ms of per-step overhead and 240 TFLOP/s; with each stage captured as a CUDA graph
the overhead measured there drops to about 4 ms (the `--overhead-ms` option).

    python benchmarks/gpu_hours.py [--config config/paper.yaml] [--overhead-ms 15]
"""
from __future__ import annotations

import argparse
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pri.cost import GROUPS, dims_of, forward_macs, schedule_profile, step_macs  # noqa: E402
from pri.sweep import method_specs, schedule_of  # noqa: E402

H200 = {"deit_tiny_patch16_224": {196: 18.8e-3, 28: 17.0e-3}, "deit_base_patch16_224": {196: 38.0e-3, 28: 19.4e-3}}


def fit(batch=128):
    """Least squares over the four METHODS points: t = overhead + flops / throughput."""
    import numpy as np

    xs, ys = [], []
    for model, pts in H200.items():
        d = dims_of(model)
        for n, t in pts.items():
            xs.append(2 * sum(step_macs(d, n).values()) * batch)
            ys.append(t)
    a = np.vstack([np.ones(len(xs)), np.array(xs)]).T
    (overhead, inv_tp), *_ = np.linalg.lstsq(a, np.array(ys), rcond=None)
    return float(overhead), float(1 / inv_tp)


def step_seconds(d, n, batch, overhead, throughput):
    return overhead + 2 * sum(step_macs(d, n).values()) * batch / throughput


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "config", "paper.yaml"))
    ap.add_argument("--overhead-ms", type=float, help="per-step overhead (default: the fit's, eager)")
    a = ap.parse_args(argv)
    cfg = yaml.safe_load(open(a.config))
    overhead, tp = fit()
    if a.overhead_ms is not None:
        overhead = a.overhead_ms / 1e3
    inv, dis, eff = cfg["inversion"], cfg["distill"], cfg["efficiency"]
    T, B = inv["iterations"], inv["images"]
    specs = method_specs(inv["methods"], T)
    seeds, batches = len(inv["seeds"]), inv.get("batches", 1)
    rows = []
    inv_h = teach_h = dist_h = 0.0
    for tid, t in cfg["teachers"].items():
        d = dims_of(t["model"], num_classes=t.get("num_classes") or 100)
        n = d.num_patches
        for tag, spec in specs.items():
            s = schedule_of(spec)
            prof = schedule_profile(s, n, T)
            traj = s.trajectories(B)
            sec = sum(it * step_seconds(d, k, traj, overhead, tp) for k, it in prof["steps"].items())
            inv_h += sec * seeds * batches / 3600
        if not t.get("checkpoint"):
            tr = t.get("train", {})
            images = {"cifar10": 50000, "cifar100": 50000}.get(t["dataset"], 50000) * tr.get("epochs", 10)
            train_flops = 3 * 2 * sum(forward_macs(d, n).values()) * images
            teach_h += train_flops / (0.5 * tp) / 3600  # training runs at about half the inversion throughput
        # distillation: teacher forward + student forward (+ head backward) per image, and evaluations
        kd = dis["steps"] * dis["batch"] * 2 * 2 * sum(forward_macs(d, n // 2).values())
        evals = 10 * 10000 * 2 * sum(forward_macs(d, n).values())
        dist_h += (kd + evals) / tp / 3600 * seeds * len(specs) + dis["steps"] * overhead / 3600 * seeds * len(specs)
    eff_h = 0.0
    for model in eff["models"]:
        d = dims_of(model)
        for tag, spec in method_specs(inv["methods"], eff["iterations"]).items():
            s = schedule_of(spec)
            prof = schedule_profile(s, d.num_patches, eff["iterations"])
            traj = s.trajectories(eff["batch"])
            eff_h += sum(it * step_seconds(d, k, traj, overhead, tp) for k, it in prof["steps"].items()) \
                * eff.get("repeats", 1) / 3600
    rows = [("teacher (fine-tuning)", teach_h), ("invert", inv_h), ("distill", dist_h), ("efficiency_time", eff_h)]
    print(f"fit: overhead {overhead * 1e3:.1f} ms/step, throughput {tp / 1e12:.0f} TFLOP/s (H200, bf16)\n")
    print("| rule family | GPU hours (estimate) |\n|---|---|")
    for name, h in rows:
        print(f"| {name} | {h:.1f} |")
    print(f"| total | {sum(h for _, h in rows):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
