"""Read a run's results into tidy tables (one row per observation) and compute every derived
number once: sparsity, speed-ups over DMI, Theorem 1's comparisons, per-method summaries.
claims.py only decides verdicts from these tables and plots.py only draws them."""
from __future__ import annotations

import json

import pandas as pd
import torch

from pri.cost import speedups
from pri.layout import parse
from pri.schedules import Spec


def _read(path):
    with open(path) as f:
        return json.load(f)


def _pct(x):
    return None if x is None else 100.0 * float(x)


def describe(tag: str) -> dict:
    """The registry's description of a tag: method, family, v, nominal sparsity."""
    d = Spec.parse(tag).describe()
    return {"method": d["method"], "family": d["family"], "v": d["v"], "nominal_sparsity": d["nominal_sparsity"]}


def teachers(paths) -> pd.DataFrame:
    rows = []
    for p in paths:
        m = _read(p)
        rec = m.get("recipe") or {}
        rows.append({
            "teacher": parse("teacher_metrics", p)["teacher"],
            "model": m.get("model"), "dataset": m.get("dataset"), "obtained": m.get("mode"),
            "sha256": m.get("sha256"), "top1_pct": _pct(m.get("top1")), "train_seconds": m.get("train_seconds"),
            "recipe": json.dumps(rec, sort_keys=True) if rec else "",
        })
    return pd.DataFrame(rows)


def distill(paths) -> pd.DataFrame:
    rows = []
    for p in paths:
        key = parse("distill", p)
        m = _read(p)
        conf = m.get("confidence") or {}
        rows.append({
            **key, **describe(key["tag"]),
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
    """Per-pool summary rows, the active-token curves, and the first seed's pools themselves."""
    rows, curves, first, seen = [], [], {}, set()
    for p in sorted(paths):
        key = parse("pool", p)
        pool = torch.load(p, weights_only=True)
        led = pool["ledger"]
        kept = pool["masks"].float().mean(1)
        counts = torch.bincount(pool["labels"], minlength=int(led.get("teacher", {}).get("num_classes") or 1))
        rows.append({
            **key, **describe(key["tag"]),
            "images": int(pool["images"].shape[0]), "kept_fraction": float(kept.mean()),
            "sparsity": 1.0 - float(kept.mean()), "inversion_seconds": led.get("wall_seconds"),
            "seconds_per_image": led.get("seconds_per_image"), "device": led.get("device"),
            "torch": led.get("torch"), "timm": led.get("timm"), "teacher_sha256": led.get("teacher", {}).get("sha256"),
            "num_classes": led.get("teacher", {}).get("num_classes"),
            "label_imbalance": int(counts.max() - counts.min()) if len(counts) else 0,
        })
        if (key["teacher"], key["sweep"], key["tag"]) not in seen:
            seen.add((key["teacher"], key["sweep"], key["tag"]))
            if key["sweep"] == "main":
                first.setdefault(key["teacher"], {})[key["tag"]] = {**describe(key["tag"]), "pool": pool}
            active = led["active_tokens"]
            curves.append(pd.DataFrame({"source": f"{key['teacher']} (T={len(active)})", "tag": key["tag"],
                                        "iteration": range(len(active)), "active_tokens": active}))
    return pd.DataFrame(rows), (pd.concat(curves) if curves else pd.DataFrame()), first


def accuracy_table(acc: pd.DataFrame, pool_rows: pd.DataFrame, teacher_rows: pd.DataFrame) -> pd.DataFrame:
    """Per teacher, sweep and tag: the students' top-1 over seeds, measured sparsity and speed."""
    if acc.empty:
        return acc
    keys = ["teacher", "sweep", "tag", "family", "method", "v"]
    g = acc.groupby(keys, dropna=False)
    t = g["top1_pct"].agg(["mean", "std", "count"]).rename(
        columns={"mean": "top1_mean", "std": "top1_std", "count": "seeds"}).reset_index()
    t["top1_best_mean"] = g["top1_best_pct"].mean().values
    t["confidence_distance"] = g["confidence_distance"].mean().values
    if not pool_rows.empty:
        sp = pool_rows.groupby(["teacher", "sweep", "tag"])[["sparsity", "images", "seconds_per_image"]].mean()
        t = t.merge(sp.reset_index(), on=["teacher", "sweep", "tag"], how="left")
    if not teacher_rows.empty:
        t = t.merge(teacher_rows[["teacher", "top1_pct"]].rename(columns={"top1_pct": "teacher_top1"}), on="teacher",
                    how="left")
    return t


def efficiency(paths):
    """Cost/fvcore rows, timing rows and Theorem 1 rows from `pri efficiency` JSONs, with the
    speed-ups over DMI (cost model and measured) and Theorem 1's comparisons computed here."""
    flops, times, theorem = [], [], []
    for p in paths:
        m = _read(p)
        rows = m.get("rows", [])
        ideal = speedups(rows, "cost_macs_total")
        measured = speedups(rows, "time_seconds_per_image")
        for r in rows:
            base = {"model": r["model"], "tag": r["tag"], **describe(r["tag"]), "weights": r.get("weights"),
                    "iterations": r.get("iterations"), "batch": r.get("batch"), "images_out": r.get("images_out")}
            if "cost_macs_total" in r or "flops_macs_total" in r:
                prof = m.get("details", {}).get("schedules", {}).get(r["tag"], {}).get("profile", {})
                flops.append({**base, "cost_macs_per_image": r.get("cost_macs_total"),
                              "cost_macs_compared": r.get("cost_macs_compared"),
                              "fvcore_macs_per_image": r.get("flops_macs_total"),
                              "fvcore_over_cost": r.get("flops_over_cost_compared"),
                              "mean_active": r.get("mean_active"), "ideal_speedup": ideal.get(r["tag"]),
                              "active_tokens": _expand(prof.get("steps"), r.get("iterations"))})
            if "time_seconds_per_image" in r:
                times.append({**base, "seconds_per_image": r["time_seconds_per_image"], "mode": r.get("time_mode"),
                              "device": r.get("time_device") or r.get("device"), "dtype": r.get("time_dtype"),
                              "cuda_graphs": r.get("time_cuda_graphs"), "peak_memory_mb": r.get("time_peak_memory_mb"),
                              "peak_memory_kind": r.get("time_peak_memory_kind"), "torch": r.get("torch"),
                              "timm": r.get("timm"), "measured_speedup": measured.get(r["tag"])})
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


def efficiency_table(flops: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    if flops.empty:
        return flops
    eff = flops.drop(columns=["active_tokens"], errors="ignore")
    if times.empty:
        return eff
    keep = ["model", "tag", "seconds_per_image", "mode", "device", "dtype", "cuda_graphs", "peak_memory_mb",
            "peak_memory_kind", "measured_speedup"]
    return eff.merge(times[[c for c in keep if c in times]], on=["model", "tag"], how="outer")


def efficiency_curves(flops: pd.DataFrame) -> pd.DataFrame:
    """Active tokens per iteration of the efficiency track's schedules (first model)."""
    if flops.empty or "active_tokens" not in flops:
        return pd.DataFrame()
    model = flops.model.iloc[0]
    return pd.concat([pd.DataFrame({"source": f"efficiency track (T={len(r.active_tokens)})", "tag": r.tag,
                                    "iteration": range(len(r.active_tokens)), "active_tokens": r.active_tokens})
                      for r in flops[flops.model == model].itertuples() if r.active_tokens])


def versions(pool_rows: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    frames = [pool_rows[["device", "torch", "timm"]]] if not pool_rows.empty else []
    if not times.empty:
        frames.append(times[[c for c in ("device", "torch", "timm") if c in times]])
    return pd.concat(frames).drop_duplicates() if frames else pd.DataFrame()


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


def load_all(teacher_paths, distill_paths, pool_paths, efficiency_paths) -> dict:
    """Every tidy table of a run, by name."""
    t = teachers(teacher_paths)
    acc = distill(distill_paths)
    pool_rows, curves, first = pools(pool_paths)
    if not acc.empty and not pool_rows.empty:
        sp = pool_rows.groupby(["teacher", "sweep", "tag"])["sparsity"].mean().reset_index()
        acc = acc.merge(sp, on=["teacher", "sweep", "tag"], how="left")
        acc["sparsity_pct"] = 100 * acc["sparsity"]
    flops, times, theorem = efficiency(efficiency_paths)
    return {"teachers": t, "distill": acc, "pools": pool_rows, "curves": curves, "first": first, "flops": flops,
            "times": times, "theorem1": theorem, "accuracy": accuracy_table(acc, pool_rows, t),
            "efficiency": efficiency_table(flops, times), "efficiency_curves": efficiency_curves(flops),
            "versions": versions(pool_rows, times)}
