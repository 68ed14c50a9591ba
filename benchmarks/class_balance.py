"""The class histograms a config's downstream tasks will see, before anything runs.

    python benchmarks/class_balance.py [--config config/paper.yaml] [--seed S]

For each teacher of the plan and each method of its main sweep, the labels of the seed's pools are
dealt exactly as ``pri invert`` deals them (pri.core.engine.assign_labels over the seed's jobs, one
class per trajectory), and the images a student sees (distill.images) and the first calibration
draw of quantisation (quantize.calib_images) are selected with the functions ``pri distill`` and
``pri quantize`` use (pri.files.pool.balanced_order). It prints, per task and method, the classes covered
and the images per class, and whether every method's histogram is the same.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def pool_labels(plan, tid: str, tag: str, seed: int):
    """(labels, trajectory ids) of a seed's pools of ``tag``, as the inversion jobs write them."""
    import torch

    from pri.core.engine import assign_labels

    sweep = plan.sweep(tid, "main")
    s = plan.schedule(tid, tag)
    b, k = s.trajectories(sweep.images[tag]), s.images_per_trajectory()
    labels = torch.cat([assign_labels(b, plan.num_classes(tid), seed, part, sweep.batches, sweep.classes)
                        for part in range(sweep.batches)])
    return labels.repeat_interleave(k), torch.arange(len(labels)).repeat_interleave(k)


def histograms(plan, tid: str, seed: int) -> list[dict]:
    """One row per (task, method): the selection's images per class."""
    import torch

    from pri.files.pool import balanced_order, class_histogram
    from pri.tasks.quantize import draw_generator

    sweep, K = plan.sweep(tid, "main"), plan.num_classes(tid)
    classes = plan.classes_of(tid) or range(K)
    tasks = []
    if plan.runs(tid, "distill") and plan.dis.get("images"):
        tasks.append(("distill", sweep.tags, int(plan.dis["images"]), seed))
    if plan.runs(tid, "quantize"):
        tasks.append(("quantize", plan.quant_tags(tid), int(plan.quant["calib_images"]), draw_generator(seed, 0)[1]))
    rows = []
    for task, tags, n, sel_seed in tasks:
        hist = class_histogram(n, plan.balance_unit(tid, tags), classes, sel_seed)
        for tag in tags:
            labels, traj = pool_labels(plan, tid, tag, seed)
            got = torch.bincount(labels[balanced_order(labels, traj, hist, sel_seed, task)], minlength=K)
            rows.append({"teacher": tid, "task": task, "tag": tag, "images": int(got.sum()),
                         "classes": int((got > 0).sum()), "per_class": sorted(set(got[got > 0].tolist())),
                         "histogram": tuple(got.tolist())})
    return rows


def main(argv=None) -> None:
    from benchmarks.gpu_hours import read_config
    from pri.workflow.plan import Plan

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(HERE, "..", "config", "paper.yaml"))
    p.add_argument("--seed", type=int, default=None, help="the seed (default: the config's first)")
    args = p.parse_args(argv)
    plan = Plan(read_config(args.config), check_inputs=False)
    seed = plan.seeds[0] if args.seed is None else args.seed
    print(f"config: {args.config}, seed {seed}\n")
    print("| teacher | task | method | images | classes | images per class | same histogram as the first |")
    print("|---|---|---|---|---|---|---|")
    for tid in plan.active:
        rows = histograms(plan, tid, seed)
        for r in rows:
            first = next(q for q in rows if q["task"] == r["task"])
            print(f"| {r['teacher']} | {r['task']} | {r['tag']} | {r['images']} | {r['classes']} | "
                  f"{', '.join(map(str, r['per_class']))} | {'yes' if r['histogram'] == first['histogram'] else 'NO'} |")


if __name__ == "__main__":
    main()
