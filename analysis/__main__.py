"""python -m analysis: build every table, plot and claims.csv of a run."""
from __future__ import annotations

import argparse
import json
import os

import pandas as pd

from pri.io import atomic_write_text

from . import claims as C
from . import collect, plots


def write_table(df: pd.DataFrame, out_dir: str, name: str, note: str = "") -> None:
    """CSV (for report.html and tools) and markdown (for people) side by side, each written atomically."""
    if df.empty:
        df = pd.DataFrame({"note": [note or "nothing to show"]})
    atomic_write_text(os.path.join(out_dir, "tables", f"{name}.csv"), df.to_csv(index=False))
    atomic_write_text(os.path.join(out_dir, "tables", f"{name}.md"), df.to_markdown(index=False, floatfmt=".4g") + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    ap.add_argument("--out", required=True, help="analysis folder of the run")
    ap.add_argument("--missing", default="[]", help="JSON: what the plan found missing")
    ap.add_argument("--claims-config", default="{}", help="JSON: the config's claims section")
    ap.add_argument("--teachers", nargs="*", default=[], help="teacher metrics JSONs")
    ap.add_argument("--distill", nargs="*", default=[], help="distillation metrics JSONs")
    ap.add_argument("--pools", nargs="*", default=[], help="pool files")
    ap.add_argument("--efficiency", nargs="*", default=[], help="efficiency JSONs (flops.json, time.json)")
    ap.add_argument("--quantize", nargs="*", default=[], help="quantisation JSONs")
    a = ap.parse_args(argv)
    missing, ccfg = json.loads(a.missing), json.loads(a.claims_config)
    level = float(ccfg.get("level", 0.95))
    os.makedirs(os.path.join(a.out, "tables"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "plots"), exist_ok=True)

    d = collect.load_all(a.teachers, a.distill, a.pools, a.efficiency, a.quantize, C.COMPARISONS, level,
                         int(ccfg.get("bootstrap", 2000)))
    why = "; ".join(f"{m['key']}: {m['reason']}" for m in missing) if missing else ""
    for name in ("distill", "pools", "quantize"):
        atomic_write_text(os.path.join(a.out, f"{name}_tidy.csv"), d[name].to_csv(index=False))
    write_table(d["accuracy"], a.out, "accuracy", f"accuracy track not run: {why}")
    write_table(d["differences"], a.out, "differences", "no paired differences")
    write_table(d["power"], a.out, "power", "no paired differences")
    write_table(d["quantize_table"], a.out, "quantization", "quantisation is off")
    write_table(d["efficiency"], a.out, "efficiency", "efficiency track not run")
    write_table(d["theorem1"], a.out, "theorem1", "efficiency track not run")
    write_table(d["teachers"], a.out, "teachers", f"no teacher: {why}")
    write_table(d["versions"], a.out, "versions", "no jobs recorded versions")
    write_table(pd.DataFrame(missing), a.out, "skipped", "nothing was skipped")

    rows = C.accuracy_claims(d["differences"], d["teachers"], ccfg, missing)
    rows += C.efficiency_claims(d["flops"], d["times"], d["theorem1"], ccfg, enabled=bool(a.efficiency))
    claims = C.table(rows)
    atomic_write_text(os.path.join(a.out, "claims.csv"), claims.to_csv(index=False))
    write_table(claims, a.out, "claims")
    write_table(C.summary(claims), a.out, "verdicts")

    P = lambda n: os.path.join(a.out, "plots", f"{n}.png")  # noqa: E731
    plots.accuracy_vs_sparsity(d["distill"], d["pools"], d["teachers"], P("accuracy_vs_sparsity"), why)
    plots.forest(claims, P("forest"), why)
    plots.synthetic_grid(d["first"], P("synthetic_grid"), why=why)
    plots.pri_stages(d["first"], P("pri_stages"), why=why)
    plots.update_counts(d["updates"], P("update_counts"), why)
    plots.accuracy_vs_compute(d["iso"], P("accuracy_vs_compute"), why)
    plots.quantization(d["quantize"], P("quantization"), why)
    plots.flops_bars(d["flops"], P("flops"))
    plots.speedup(d["flops"], d["times"], P("speedup"))
    plots.active_tokens(d["curves"], d["efficiency_curves"], P("active_tokens"))
    print(C.summary(claims).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
