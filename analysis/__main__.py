"""python -m analysis: build every table, plot and claims.csv of a run."""
from __future__ import annotations

import argparse
import json
import os

import pandas as pd

from . import claims as C
from . import collect, plots


def _write_table(df: pd.DataFrame, out_dir: str, name: str, note: str = "") -> None:
    """CSV (for report.html and tools) and markdown (for people) side by side."""
    if df.empty:
        df = pd.DataFrame({"note": [note or "nothing to show"]})
    df.to_csv(os.path.join(out_dir, "tables", f"{name}.csv"), index=False)
    with open(os.path.join(out_dir, "tables", f"{name}.md"), "w") as f:
        f.write(df.to_markdown(index=False, floatfmt=".4g") + "\n")


def accuracy_table(acc: pd.DataFrame, pools: pd.DataFrame, teachers: pd.DataFrame) -> pd.DataFrame:
    if acc.empty:
        return acc
    g = acc.groupby(["teacher", "tag", "family"], dropna=False)
    t = g["top1_pct"].agg(["mean", "std", "count"]).rename(columns={"mean": "top1_mean", "std": "top1_std",
                                                                    "count": "seeds"}).reset_index()
    t["top1_best_mean"] = g["top1_best_pct"].mean().values
    t["confidence_distance"] = g["confidence_distance"].mean().values
    sp = pools.groupby(["teacher", "tag"])[["sparsity", "images", "seconds_per_image"]].mean().reset_index()
    t = t.merge(sp, on=["teacher", "tag"], how="left")
    if not teachers.empty:
        t = t.merge(teachers[["teacher", "top1_pct"]].rename(columns={"top1_pct": "teacher_top1"}), on="teacher",
                    how="left")
    order = {f: i for i, f in enumerate(plots.FAMILY_ORDER)}
    return t.sort_values(["teacher", "family", "sparsity"], key=lambda s: s.map(order) if s.name == "family" else s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    ap.add_argument("--out", required=True, help="analysis folder of the run")
    ap.add_argument("--specs", required=True, help="JSON: method tag -> schedule spec")
    ap.add_argument("--missing", default="[]", help="JSON: what the preflight check found missing")
    ap.add_argument("--claims-config", default="{}", help="JSON: the config's claims section")
    ap.add_argument("--teachers", nargs="*", default=[], help="teacher metrics JSONs")
    ap.add_argument("--distill", nargs="*", default=[], help="distillation metrics JSONs")
    ap.add_argument("--pools", nargs="*", default=[], help="pool files")
    ap.add_argument("--efficiency", nargs="*", default=[], help="efficiency JSONs (flops.json, time.json)")
    a = ap.parse_args(argv)
    specs, missing, ccfg = json.loads(a.specs), json.loads(a.missing), json.loads(a.claims_config)
    os.makedirs(os.path.join(a.out, "tables"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "plots"), exist_ok=True)

    teachers = collect.teachers(a.teachers)
    acc = collect.distill(a.distill, specs)
    pools, curves, first = collect.pools(a.pools)
    flops, times, theorem = collect.efficiency(a.efficiency)
    eff_curves = pd.DataFrame()
    if not flops.empty and "active_tokens" in flops:
        model = flops.model.iloc[0]
        eff_curves = pd.concat([pd.DataFrame({"source": f"efficiency track (T={len(r.active_tokens)})", "tag": r.tag,
                                              "iteration": range(len(r.active_tokens)),
                                              "active_tokens": r.active_tokens})
                                for r in flops[flops.model == model].itertuples()])
        flops = flops.drop(columns=["active_tokens"])

    why_acc = "; ".join(f"{m['key']}: {m['reason']}" for m in missing) if missing else ""
    # tidy CSVs (one row per observation) and tables
    acc.to_csv(os.path.join(a.out, "distill_tidy.csv"), index=False)
    pools.to_csv(os.path.join(a.out, "pools_tidy.csv"), index=False)
    _write_table(accuracy_table(acc, pools, teachers), a.out, "accuracy", f"accuracy track not run: {why_acc}")
    eff = flops.merge(times, on=["model", "tag"], how="outer", suffixes=("", "_time")) if not times.empty else flops
    if not eff.empty and "seconds_per_image" in eff:
        for model, g in eff.groupby("model"):
            ref = g.set_index("tag")
            if "dmi" in ref.index:
                eff.loc[g.index, "measured_speedup"] = ref.loc["dmi", "seconds_per_image"] / g["seconds_per_image"]
                eff.loc[g.index, "ideal_speedup"] = ref.loc["dmi", "cost_macs_per_image"] / g["cost_macs_per_image"]
    _write_table(eff, a.out, "efficiency", "efficiency track not run")
    _write_table(theorem, a.out, "theorem1", "efficiency track not run")
    _write_table(teachers, a.out, "teachers", f"no teacher: {why_acc}")
    vers = pools[["device", "torch", "timm"]].drop_duplicates() if not pools.empty else pd.DataFrame()
    if not times.empty:
        cols = [c for c in ("device", "torch", "timm") if c in times]
        vers = pd.concat([vers, times[cols].drop_duplicates()]).drop_duplicates()
    _write_table(vers, a.out, "versions", "no jobs recorded versions")
    _write_table(pd.DataFrame(missing), a.out, "skipped", "nothing was skipped")

    rows = C.accuracy_claims(acc, teachers, ccfg, missing)
    rows += C.efficiency_claims(flops, times, theorem, ccfg, enabled=bool(a.efficiency))
    claims = pd.DataFrame(rows)
    claims["_k"] = claims["claim_id"].map(lambda c: (int("".join(ch for ch in c if ch.isdigit())), c))
    claims = claims.sort_values("_k").drop(columns="_k")
    claims.to_csv(os.path.join(a.out, "claims.csv"), index=False)
    _write_table(claims, a.out, "claims")

    P = lambda n: os.path.join(a.out, "plots", f"{n}.png")  # noqa: E731
    plots.accuracy_vs_sparsity(acc, pools, teachers, P("accuracy_vs_sparsity"), why_acc)
    plots.synthetic_grid(first, P("synthetic_grid"), why=why_acc)
    plots.pri_stages(first, P("pri_stages"), why=why_acc)
    plots.flops_bars(flops, P("flops"))
    plots.speedup(flops, times, P("speedup"))
    plots.active_tokens(curves, eff_curves, P("active_tokens"))
    print(claims[["claim_id", "verdict", "our_value"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
