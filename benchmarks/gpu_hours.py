"""Expected GPU hours per rule family of a config (default: config/paper.yaml), from step times
measured on one H200 (benchmarks/results/h200, written by benchmarks/gpu_check.py).

- invert, efficiency_time: every stage's step time of DeiT-Ti and DeiT-B at batch 128 was
  measured stage-sampled with CUDA graphs (``paper_fp32_*.json`` for the inversion's fp32,
  ``paper_*.json`` for the efficiency track's bf16). A stage of any schedule is priced by
  interpolating, in the suite's cost-model FLOPs of one step, between the measured stages of the
  same model (DeiT-S: between those of DeiT-Ti and DeiT-B).
- teacher (fine-tuning), distill: seconds per fine-tuning step (batch 128), per head-only KD
  step (batch 32) and per evaluation batch (512) of DeiT-Ti/S/B, measured directly
  (``train_steps.json``), times the steps the config asks for.

Data loading, process start-up, checkpoint writing and the few score forwards of SMI and PRI
(a few per cent of their loops) are not counted; on a cluster, add queue time.

    python benchmarks/gpu_hours.py [--config config/paper.yaml] [--measured benchmarks/results/h200]
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pri.core.schedules import build  # noqa: E402
from pri.measure.cost import dims_of, schedule_profile, step_macs  # noqa: E402
from pri.workflow.layout import SWEEP_KINDS  # noqa: E402

TRAIN_IMAGES = {"cifar10": 50000, "cifar100": 50000, "imagefolder": 1281167}
TEST_IMAGES = {"cifar10": 10000, "cifar100": 10000, "imagefolder": 50000}
EVAL_BATCH = 512


def stage_points(measured: str, prefix: str) -> list[tuple[str, int, int, float]]:
    """(model, active, trajectories, seconds per step) of every measured stage."""
    pts = []
    for path in sorted(glob.glob(os.path.join(measured, f"{prefix}deit_*.json"))):
        model = os.path.basename(path)[len(prefix):-len(".json")]
        with open(path) as f:
            d = json.load(f)
        for stages in d["stages"].values():
            for st in stages:
                pts.append((model, int(st["active"]), int(st["trajectories"]), float(st["step_seconds"])))
    if not pts:
        raise SystemExit(f"no {prefix}deit_*.json under {measured}: run benchmarks/gpu_check.py on a GPU first")
    return sorted(set(pts))


def flops(model: str, k: int, b: int) -> float:
    return 2.0 * sum(step_macs(dims_of(model), k).values()) * b


class StepTimes:
    """Seconds per inversion step, interpolated in FLOPs between measured stages."""

    def __init__(self, points):
        self.by_model: dict[str, list[tuple[float, float]]] = {}
        for m, k, b, t in points:
            self.by_model.setdefault(m, []).append((flops(m, k, b), t))
            self.by_model.setdefault("*", []).append((flops(m, k, b), t))
        for v in self.by_model.values():
            v.sort()

    def __call__(self, model: str, k: int, b: int) -> float:
        import numpy as np

        pts = self.by_model.get(model) or self.by_model["*"]
        x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        f = flops(model, k, b)
        if f > x[-1]:  # beyond the largest measured stage: scale with FLOPs
            return float(y[-1] * f / x[-1])
        return float(np.interp(f, x, y))


def inversion_seconds(model: str, tag: str, iterations: int, images: int, step: StepTimes) -> float:
    n = dims_of(model).num_patches
    s = build(tag, n, iterations)
    prof = schedule_profile(s, n, iterations)
    b = s.trajectories(images)
    return sum(it * step(model, k, b) for k, it in prof["steps"].items())


QUANT_OVER_FP = 1.5  # a fake-quant evaluation costs about 1.5x a float one (measured on CPU, pri quantize)


def read_config(path: str) -> dict:
    """A workflow config checked and filled with the schema's defaults, as the Snakefile reads it."""
    from pri.workflow.config import read

    return read(path)


class TrainSteps(dict):
    """Measured training and evaluation steps per model; a model smaller than DeiT-Ti (the suite's
    small ViTs) is priced at DeiT-Ti's step, the floor of a launch-bound GPU step."""

    def __missing__(self, model):
        return self["deit_tiny_patch16_224"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(HERE, "..", "config", "paper.yaml"))
    ap.add_argument("--measured", default=os.path.join(HERE, "results", "h200"))
    a = ap.parse_args(argv)
    hours, jobs, basis, steps_of = hours_of(read_config(a.config), a.measured)
    print(f"measured on: {os.path.relpath(a.measured)}")
    for dtype, st in steps_of.items():
        print(f"inversion steps ({dtype}): interpolated between {len(st.by_model['*'])} measured stages")
    print()
    print("| rule family | jobs | GPU hours on one H200 | from |\n|---|---|---|---|")
    for name, h in hours.items():
        if jobs[name]:
            print(f"| {name} | {jobs[name]} | {h:.2f} | {basis[name]} |")
    print(f"| total | {sum(jobs.values())} | {sum(hours.values()):.2f} | |")
    return 0


def hours_of(cfg: dict, measured: str):
    """(GPU hours per rule family, jobs per rule family, what each is priced from, step times)."""
    from pri.workflow.plan import Plan

    plan = Plan(cfg, check_inputs=False)  # price every job the config asks for, data or not
    with open(os.path.join(measured, "train_steps.json")) as f:
        train = TrainSteps({m["model"]: m for m in json.load(f)["models"]})
    steps_of = {dtype: StepTimes(stage_points(measured, prefix))
                for dtype, prefix in (("fp32", "paper_fp32_"), ("bf16", "paper_"))}
    inv, dis, eff, q = cfg["inversion"], cfg["distill"], cfg["efficiency"], cfg["quantize"]
    inv_dtype = cfg.get("dtype", "fp32")
    T = inv["iterations"]
    eval_every = int(dis.get("eval_every") or 0)
    kinds = tuple(SWEEP_KINDS)  # one inversion and one distillation rule each
    families = ["teacher"] + [f"{r} ({k})" for r in ("invert", "distill") for k in kinds]
    hours = {k: 0.0 for k in families + ["quantize", "efficiency_time"]}
    jobs = dict.fromkeys(hours, 0)
    for tid in plan.active:
        t = plan.teachers[tid]
        model, ds = t["model"], t["dataset"]
        test_batches = math.ceil(TEST_IMAGES.get(ds, 10000) / EVAL_BATCH)
        eval_s = test_batches * train[model]["eval"]["seconds"]
        # the teacher rule fine-tunes (no checkpoint) or only evaluates (a checkpoint)
        seconds = eval_s
        if not t.get("checkpoint"):
            tr = t.get("train", {})
            steps = math.ceil(tr.get("epochs", 10) * TRAIN_IMAGES.get(ds, 50000) / tr.get("batch", 128))
            seconds += steps * train[model]["finetune"]["seconds"] * tr.get("batch", 128) / train[model]["finetune"]["batch"]
        hours["teacher"] += seconds / 3600
        jobs["teacher"] += 1
        for sw in plan.sweeps(tid):
            for tag in sw.tags:
                per = inversion_seconds(model, tag, T, sw.images[tag], steps_of[inv_dtype])
                hours[f"invert ({sw.kind})"] += per * len(sw.seeds) * sw.batches / 3600
            jobs[f"invert ({sw.kind})"] += len(sw.seeds) * sw.batches
            if plan.runs(tid, "distill"):
                student, _, _ = plan.student_of(tid)
                st = train[student]
                kd = sum(r["seconds"] for r in st["kd_head_only"]) / len(st["kd_head_only"])
                kd *= dis["batch"] / st["kd_head_only"][0]["batch"]
                evals = ((dis["steps"] - 1) // eval_every if eval_every else 0) + 1  # every eval_every steps, and the last
                for tag in sw.tags:
                    images = sw.distill_images[tag] or plan.pool_images(tid, tag, sw.images[tag]) * sw.batches
                    per_job = (dis["steps"] * kd + evals * test_batches * st["eval"]["seconds"]) * dis.get("kd_runs", 1)
                    # the teacher's outputs on every synthetic image (and its augmentations, when precomputed)
                    per_job += math.ceil(images / EVAL_BATCH) * train[model]["teacher_sparse_fwd"]["seconds"]
                    hours[f"distill ({sw.kind})"] += per_job * len(sw.seeds) / 3600
                jobs[f"distill ({sw.kind})"] += len(sw.seeds)
        if plan.runs(tid, "quantize") and q.get("enabled"):
            settings = max(len(q["w_bits"]), len(q["a_bits"]))
            evals = settings * q["draws"] * len(plan.quant_tags(tid)) * len(plan.sweep(tid, "main").seeds)
            evals += 2 * settings * q["draws"]  # the noise and real-image baselines
            hours["quantize"] += (evals * QUANT_OVER_FP + 1) * eval_s / 3600
            jobs["quantize"] += len(plan.sweep(tid, "main").seeds) + 1
    if eff.get("enabled", True):
        # the efficiency_time rule: the models, tags and batch the plan times
        step = steps_of[eff.get("dtype", "fp32")]
        for model in plan.efficiency_models("time"):
            for tag in plan.efficiency_tags("time"):
                hours["efficiency_time"] += inversion_seconds(model, tag, eff["iterations"],
                                                              plan.efficiency_batch("time"),
                                                              step) * eff.get("repeats", 1) / 3600
            jobs["efficiency_time"] += 1
    basis = {"teacher": "fine-tuning steps, measured",
             **{f"invert ({k})": f"stage-sampled ({inv_dtype}), interpolated" for k in kinds},
             **{f"distill ({k})": "KD and evaluation steps, measured" for k in kinds},
             "quantize": f"evaluation steps, measured, x{QUANT_OVER_FP} for fake-quant",
             "efficiency_time": f"stage-sampled ({eff.get('dtype', 'fp32')}), interpolated"}
    return hours, jobs, basis, steps_of


if __name__ == "__main__":
    raise SystemExit(main())
