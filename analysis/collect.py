"""Read the results of a run into tidy tables (one row per observation)."""
from __future__ import annotations

import json
import os
import re

import pandas as pd
import torch

_DISTILL = re.compile(r"distill/(?P<teacher>[^/]+)/(?P<tag>[^/]+)/seed(?P<seed>\d+)\.json$")
_POOL = re.compile(r"pools/(?P<teacher>[^/]+)/(?P<tag>[^/]+)/seed(?P<seed>\d+)/batch(?P<batch>\d+)\.pt$")


def _read(path):
    with open(path) as f:
        return json.load(f)


def _pct(x):
    return None if x is None else 100.0 * float(x)


def teachers(paths) -> pd.DataFrame:
    rows = []
    for p in paths:
        m = _read(p)
        rec = m.get("recipe") or m.get("provenance", {}).get("recipe") or {}
        rows.append({
            "teacher": os.path.basename(os.path.dirname(p)),
            "model": m.get("model") or m.get("arch"),
            "dataset": m.get("dataset") or rec.get("dataset"),
            "obtained": m.get("mode") or ("loaded" if m.get("loaded_from") else "trained"),
            "sha256": m.get("sha256"),
            "top1_pct": _pct(m.get("top1")),
            "train_seconds": m.get("train_seconds"),
            "recipe": json.dumps(rec, sort_keys=True) if rec else "",
        })
    return pd.DataFrame(rows)


def distill(paths, specs: dict) -> pd.DataFrame:
    rows = []
    for p in paths:
        key = _DISTILL.search(p.replace(os.sep, "/"))
        m = _read(p)
        tag = key["tag"]
        spec = specs.get(tag, {})
        conf = m.get("confidence") or {}
        rows.append({
            "teacher": key["teacher"], "tag": tag, "seed": int(key["seed"]),
            "family": spec.get("family", tag), "v": spec.get("v"),
            "nominal_sparsity": spec.get("nominal_sparsity"),
            "top1_pct": _pct(m.get("top1")), "top1_best_pct": _pct(m.get("top1_best")),
            "confidence_distance": conf.get("wasserstein1"),
            "synthetic_confidence_mean": (conf.get("synthetic") or {}).get("mean"),
            "real_confidence_mean": (conf.get("real_test") or {}).get("mean"),
            "images": m.get("images"), "kd_steps": m.get("steps"),
            "student": (m.get("student") or {}).get("name"),
            "device": m.get("device"), "wall_seconds": m.get("wall_seconds"),
        })
    return pd.DataFrame(rows)


def pools(paths):
    """Per-pool summary rows, the active-token curves, and the pools themselves (first seed)."""
    rows, curves, first, seen = [], [], {}, set()
    for p in sorted(paths):
        key = _POOL.search(p.replace(os.sep, "/"))
        pool = torch.load(p, weights_only=True)
        led = pool["ledger"]
        kept = pool["masks"].float().mean(1)
        rows.append({
            "teacher": key["teacher"], "tag": key["tag"], "seed": int(key["seed"]), "batch": int(key["batch"]),
            "images": int(pool["images"].shape[0]), "kept_fraction": float(kept.mean()),
            "sparsity": 1.0 - float(kept.mean()), "inversion_seconds": led.get("wall_seconds"),
            "seconds_per_image": led.get("seconds_per_image"), "device": led.get("device"),
            "torch": led.get("torch"), "timm": led.get("timm"), "teacher_sha256": led.get("teacher", {}).get("sha256"),
            "num_classes": led.get("teacher", {}).get("num_classes"),
        })
        if (key["teacher"], key["tag"]) not in seen:
            seen.add((key["teacher"], key["tag"]))
            first.setdefault(key["teacher"], {})[key["tag"]] = pool
            counts = led["active_tokens"]
            curves.append(pd.DataFrame({"source": f"{key['teacher']} (T={len(counts)})", "tag": key["tag"],
                                        "iteration": range(len(counts)), "active_tokens": counts}))
    return pd.DataFrame(rows), (pd.concat(curves) if curves else pd.DataFrame()), first


def efficiency(paths):
    """Cost/fvcore rows, timing rows and Theorem 1 rows from `pri efficiency` JSONs."""
    flops, times, theorem = [], [], []
    for p in paths:
        m = _read(p)
        for r in m.get("rows", []):
            base = {"model": r["model"], "tag": r["tag"], "weights": r.get("weights"), "iterations": r.get("iterations"),
                    "batch": r.get("batch"), "images_out": r.get("images_out")}
            if "cost_macs_total" in r or "flops_macs_total" in r:
                prof = m.get("details", {}).get("schedules", {}).get(r["tag"], {}).get("profile", {})
                flops.append({**base, "cost_macs_per_image": r.get("cost_macs_total"),
                              "cost_macs_compared": r.get("cost_macs_compared"),
                              "fvcore_macs_per_image": r.get("flops_macs_total"),
                              "fvcore_over_cost": r.get("flops_over_cost_compared"),
                              "mean_active": r.get("mean_active"),
                              "active_tokens": _expand(prof.get("steps"), r.get("iterations"))})
            if "time_seconds_per_image" in r:
                times.append({**base, "seconds_per_image": r["time_seconds_per_image"], "mode": r.get("time_mode"),
                              "device": r.get("time_device") or r.get("device"), "dtype": r.get("time_dtype"),
                              "cuda_graphs": r.get("time_cuda_graphs"), "peak_memory_mb": r.get("time_peak_memory_mb"),
                              "peak_memory_kind": r.get("time_peak_memory_kind"), "torch": r.get("torch"),
                              "timm": r.get("timm")})
        for t in m.get("details", {}).get("theorem1", []):
            model = m.get("provenance", {}).get("model", t.get("model"))
            theorem.append({"model": model, "v": t["v"], "part": "mlp", "n_over_d": t["n_over_d"],
                            "ratio": t["mlp_ratio_integral"], "closed_form": t["mlp_ratio_closed"],
                            "predicted": "PRI < SMI* ((v+1)/(2v) < 1)", "measured_holds": t["mlp_holds_integral"],
                            "holds": bool(t["mlp_holds_integral"] and t["mlp_holds_closed"])})
            theorem.append({"model": model, "v": t["v"], "part": "attention", "n_over_d": t["n_over_d"],
                            "ratio": t["attn_ratio_integral"], "closed_form": t["attn_ratio_closed"],
                            "predicted": f"PRI {'<=' if t['attn_holds_closed'] else '>'} SMI* "
                                         f"(N/D {'<=' if t['attn_holds_closed'] else '>'} {t['attn_bound']:.2f})",
                            "measured_holds": t["attn_holds_integral"],
                            "holds": bool(t["attn_holds_integral"] == t["attn_holds_closed"])})
    return pd.DataFrame(flops), pd.DataFrame(times), pd.DataFrame(theorem)


def _expand(steps, iterations):
    """Active count per iteration from a profile's {count: iterations}, in schedule order (descending)."""
    if not steps:
        return None
    out = []
    for k, n in sorted(((int(k), int(n)) for k, n in steps.items()), reverse=True):
        out += [k] * n
    if iterations and len(out) < iterations:
        out += [0] * (iterations - len(out))
    return out
