"""The verdict student's choices, made on the validation split only (a benchmark, not a test).

    python benchmarks/probe_choice.py --run results/default [--train 10000] [--out benchmarks/results/probe_choice.md]

Reads a finished run (its teacher and its main sweep's pools) and writes a Markdown table of:

1. **the backbone** (pri/tasks/probe.py): for a few shapes of the fixed random ViT, its *ceiling*, the
   linear head fitted on ``--train`` real training images (labels, cross-entropy; and the teacher's
   logits, the KD loss), scored on the validation split (the choice) and on the test split (shown,
   never used to choose);
2. **the head's L2 penalty and temperature**: heads fitted on the first seed's pools of ``--tags``
   (DMI, SMI and PRI at v = 4), scored on ``--val`` validation images; among the settings whose
   fits converge on every pool (two heads of a pool then agree), the best mean over the pools is
   the default (a tie within 0.1 points goes to the stronger penalty).

The validation split is the one ``pri teacher`` holds out of the training set (pri.files.data.holdout_mask):
the teacher never trained on it and no test image enters a choice.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import torch
import torch.nn.functional as F

from pri.cli import build_parser
from pri.core.engine import Augment
from pri.core.vit import patch_size
from pri.files.data import for_teacher, prepare
from pri.files.models import load_model
from pri.tasks import probe
from pri.tasks.distill import TeacherTargets, load_pools, load_teacher, select_images

BACKBONES = (dict(embed_dim=64, depth=3, num_heads=2), dict(embed_dim=128, depth=1, num_heads=2),
             dict(embed_dim=128, depth=2, num_heads=2), dict(embed_dim=256, depth=1, num_heads=4))
L2S = (1e-3, 1e-2, 1e-1, 1.0)
TEMPERATURES = (1.0, 4.0)


def build_parser_for(argv: list[str]) -> argparse.Namespace:
    """pri distill's options, defaults filled, for the suite's own loading functions."""
    return build_parser("distill").parse_args(["distill", *argv])


def fit_ce(feats: torch.Tensor, labels: torch.Tensor, l2: float) -> probe.Head:
    """The same linear head fitted to labels by cross-entropy (the ceiling with labels)."""
    onehot = F.one_hot(labels, int(labels.max()) + 1).double() * 50.0  # near-hard targets through the KD objective
    return probe.fit_head(feats, onehot, 1.0, l2, 0)[0]


def ceiling_rows(teacher, splits: dict, train: int, device) -> list[dict]:
    img, p, ch = int(teacher.model.patch_embed.img_size[0]), patch_size(teacher.model), \
        int(teacher.model.patch_embed.proj.in_channels)
    rows = []
    for shape in BACKBONES:
        cfg = dict(probe.DEFAULTS, **shape)
        bb = probe.build_backbone(img, p, ch, cfg).to(device)
        t0 = time.perf_counter()
        f = {k: probe.features(bb, prepare(x.to(device), img, teacher.mean, teacher.std), None) for k, (x, _) in
             splits.items()}
        per_image_ms = 1000 * (time.perf_counter() - t0) / sum(len(x) for x, _ in splits.values())
        t_train = probe.dense_logits(teacher.model, splits["train"][0], img, teacher.mean, teacher.std, device, 500)
        heads = {"labels": fit_ce(f["train"], splits["train"][1], 1e-4),
                 "teacher KD": probe.fit_head(f["train"], t_train, cfg["temperature"], cfg["l2"], 0)[0]}
        for how, head in heads.items():
            acc = {k: float((head.logits(f[k]).argmax(-1) == splits[k][1]).float().mean()) for k in ("val", "test")}
            rows.append({"backbone": f"d{shape['embed_dim']} x {shape['depth']} blocks", "dim": probe.feature_dim(bb),
                         "head from": how, "train images": train, "val top-1": 100 * acc["val"],
                         "test top-1 (not used)": 100 * acc["test"], "ms per image": per_image_ms})
        print(rows[-2], rows[-1], file=sys.stderr)
    return rows


def pool_rows(run: str, teacher_path: str, tags: list[str], n_val: int, device) -> list[dict]:
    pools = sorted(p for t in tags for p in glob.glob(os.path.join(run, "pools", "*", "main", t, "seed0", "*.pt")))
    rows = []
    for path in pools:
        args = build_parser_for(["--pool", path, "--teacher", teacher_path, "--augment", "--val", "--out", os.devnull])
        loaded, info = load_pools(args.pool)
        teacher = load_teacher(args, loaded, device)
        syn = select_images(args, loaded, info, teacher.num_classes)
        H, W = syn.images.shape[-2:]
        aug = Augment(H, W, patch_size(teacher.model), 0.0, True, "cpu", shift=args.augment_shift)
        table = TeacherTargets(teacher, syn, aug, 10**9, 1, device, False, 512).table
        m = teacher.model
        bb = probe.build_backbone(int(m.patch_embed.img_size[0]), patch_size(m), int(m.patch_embed.proj.in_channels))
        x, t = probe.training_rows(bb, teacher, syn, aug, table, device, 512, None)
        _, vx, vy, vmeta = for_teacher(teacher, None, None, "val", n_val, args.teacher)
        vf = probe.real_features(bb, teacher, vx, repr(vmeta["sha256"]), device, 512)
        for T in TEMPERATURES:
            for l2 in L2S:
                head, fit = probe.fit_head(x, t, T, l2, 0)
                acc = float((head.logits(vf).argmax(-1) == vy).float().mean())
                rows.append({"method": info[0]["ledger"].get("tag"), "T": T, "l2": l2, "val top-1": 100 * acc,
                             "iterations": fit["iterations"], "converged": fit["converged"]})
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    keys = list(rows[0])
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) and abs(v) >= 0.01 else (f"{v:g}" if isinstance(v, float) else str(v))  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] +
                     ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]) + "\n"


def choose(rows: list[dict]) -> tuple[float, float, list[dict]]:
    means = {}
    for r in rows:
        means.setdefault((r["T"], r["l2"]), []).append(r)
    table = [{"T": T, "l2": l2, "mean val top-1 over pools": sum(r["val top-1"] for r in v) / len(v), "pools": len(v),
              "converged on every pool": all(r["converged"] for r in v)} for (T, l2), v in sorted(means.items())]
    ok = [r for r in table if r["converged on every pool"]] or table
    best = max(r["mean val top-1 over pools"] for r in ok)
    pick = max((r for r in ok if r["mean val top-1 over pools"] >= best - 0.1), key=lambda r: (r["l2"], r["T"]))
    return pick["T"], pick["l2"], table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="results/default", help="a finished run's folder (its teacher and pools)")
    ap.add_argument("--teacher-id", default="fmnist")
    ap.add_argument("--model", default="vit_pico_patch4_28", help="the teacher's architecture")
    ap.add_argument("--train", type=int, default=10000, help="real training images for the ceiling")
    ap.add_argument("--tags", nargs="+", default=["dmi", "smi_v4", "pri_v4"], help="the pools of the L2/T choice")
    ap.add_argument("--val", type=int, default=3000, help="validation images scoring the L2/T choice")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/probe_choice.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    teacher_path = os.path.join(a.run, "teachers", a.teacher_id, "teacher.pt")
    teacher = load_model(a.model, teacher_path, option="--run", frozen=True)
    splits = {}
    for split, n in (("train", a.train), ("val", None), ("test", None)):
        _, x, y, _ = for_teacher(teacher, None, None, split, n, teacher_path)
        splits[split] = (x, y)
    ceiling = ceiling_rows(teacher, splits, a.train, device)
    pools = pool_rows(a.run, teacher_path, a.tags, a.val, device)
    T, l2, summary = choose(pools)
    text = (f"# The verdict student's choices (validation split only)\n\nRun: `{a.run}` (teacher "
            f"`{a.teacher_id}`), written by `python benchmarks/probe_choice.py`.\n\n"
            f"## Ceiling: the linear head on real training images\n\n{markdown(ceiling)}\n"
            f"## L2 penalty and temperature, fitted on the first seed's pools\n\n{markdown(summary)}\n"
            f"Chosen: T = {T:g}, l2 = {l2:g} (among the settings that converge on every pool, the best mean "
            f"validation top-1; within 0.1 points the stronger penalty).\n\n<details><summary>Every pool</summary>\n\n{markdown(pools)}\n</details>\n")
    write_report(a.out, text)
    return 0


def write_report(path: str, text: str) -> None:
    """Write a benchmark's Markdown report (folders made) and print it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
