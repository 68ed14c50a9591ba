"""python -m analysis: build every table, plot and claims.csv of a run."""
from __future__ import annotations

import argparse
import html
import json
import os
import sys

import pandas as pd

from pri.files.io import atomic_write_text

from . import claims as C
from . import collect, plots
from . import outputs as O
from . import stats as S
from . import vocabulary as V


CSS = """<meta charset="utf-8"><style>
.pri-table{font:13px/1.35 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;background:#fff;
 padding:6px;overflow-x:auto}
.pri-table table{border-collapse:collapse;width:100%}
.pri-table th,.pri-table td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
.pri-table th{background:#f0f3f6;position:sticky;top:0}
.pri-table tr:nth-child(even) td{background:#f8fafc}
.pri-table td.v-supported{background:#dafbe1!important;font-weight:600}
.pri-table td.v-not-supported{background:#ffebe9!important;font-weight:600}
.pri-table td.v-inconclusive{background:#fff8c5!important}
.pri-table td.v-not-run{color:#6e7781}
.pri-table td.v-not-testable{background:#eaeef2!important;font-style:italic}
.pri-table caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
.prose:has(.pri-table){max-width:none}
div.overflow-auto:has(.pri-table){align-items:flex-start;justify-content:flex-start}
div.flex.gap-3:has(.pri-table){flex-wrap:wrap}
</style>
"""
VERDICT_CLASS = {S.SUPPORTED: "v-supported", S.NOT_SUPPORTED: "v-not-supported",
                 S.INCONCLUSIVE: "v-inconclusive", S.NOT_RUN: "v-not-run", S.NOT_TESTABLE: "v-not-testable",
                 S.CONTROL_PASSED: "v-supported", S.CONTROL_FAILED: "v-not-supported"}


def table_html(df: pd.DataFrame, title: str = "", group: tuple = (), nowrap: tuple = ()) -> str:
    """A table as a small self-contained HTML fragment (its own CSS, scoped to .pri-table; on the
    report's landing page it also widens the text column that holds it) that report.html shows
    inline; verdict cells are coloured. ``group``: columns whose repeated values (the parts of one
    claim) are written once, at the first row of the group; ``nowrap``: columns kept on one line."""
    df = df.copy()
    for col in (c for c in nowrap if c in df):
        df[col] = df[col].map(lambda x: x.replace(" ", "\u00a0") if isinstance(x, str) else x)
    if group and not df.empty and set(group) <= set(df):
        repeat = df[list(group)].eq(df[list(group)].shift()).all(axis=1)
        for col in group:
            df[col] = df[col].astype(object).where(~repeat, "")
    body = df.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}", border=0, escape=True)
    for text, cls in VERDICT_CLASS.items():
        for shown in dict.fromkeys((text, text.replace(" ", "\u00a0"))):
            body = body.replace(f"<td>{shown}</td>", f'<td class="{cls}">{shown}</td>')
    if title:
        body = body.replace("<thead>", f"<caption>{html.escape(title)}</caption>\n  <thead>", 1)
    return f'{CSS}<div class="pri-table">\n{body}\n</div>\n'


def write_table(df: pd.DataFrame, out_dir: str, name: str, note: str = "", title: str = "", group: tuple = (),
                nowrap: tuple = ()) -> None:
    """CSV (for tools), markdown (for people) and HTML (shown inside report.html) side by side, each
    written atomically."""
    if df.empty:
        df = pd.DataFrame({"note": [note or "nothing to show"]})
    atomic_write_text(os.path.join(out_dir, "tables", f"{name}.csv"), df.to_csv(index=False))
    atomic_write_text(os.path.join(out_dir, "tables", f"{name}.md"), df.to_markdown(index=False, floatfmt=".4g") + "\n")
    atomic_write_text(os.path.join(out_dir, "tables", f"{name}.html"), table_html(df, title, group, nowrap))


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
    ap.add_argument("--data", default="{}", help="JSON: teacher -> {dataset, data_root} (real images for the grid)")
    a = ap.parse_args(argv)
    try:
        missing, ccfg, data = (_json_option(getattr(a, k), "--" + k.replace("_", "-"), t)
                               for k, t in (("missing", list), ("claims_config", dict), ("data", dict)))
    except ValueError as e:
        print(f"python -m analysis: error: {e}", file=sys.stderr)
        return 2
    level = float(ccfg.get("level", 0.95))
    os.makedirs(os.path.join(a.out, "tables"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "plots"), exist_ok=True)

    d = collect.load_all(a.teachers, a.distill, a.pools, a.efficiency, a.quantize, V.COMPARISONS, level,
                         int(ccfg.get("bootstrap", 2000)))
    d.update(with_intervals(d, level))
    why = "; ".join(f"{m['key']}: {m['reason']}" for m in missing) if missing else ""
    for name in O.TIDY:  # per-image correctness stays out of the CSV; measured seconds are in the timing table
        atomic_write_text(os.path.join(a.out, f"{name}_tidy.csv"),
                          collect.without_measured(d[name].drop(columns=["correct"], errors="ignore")).to_csv(index=False))
    rows = C.accuracy_claims(d["differences"], d["teachers"], ccfg, missing)
    rows += C.efficiency_claims(d["flops"], d["times"], d["speeds"], d["theorem1"], ccfg, enabled=bool(a.efficiency))
    claims = C.table(rows)
    atomic_write_text(os.path.join(a.out, "claims.csv"), claims.to_csv(index=False))
    write_tables(d, claims, missing, why, a.out)
    draw(d, claims, why, a.out, level, data)
    print(C.summary(claims).to_string(index=False))
    return 0


def _json_option(text: str, option: str, kind: type):
    """The JSON value of an option, or a ValueError naming the option (one line, no traceback)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{option}: not JSON ({e.msg} at character {e.pos}): {text[:80]!r}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{option}: give a JSON {'list' if kind is list else 'object'}, got {text[:80]!r}")
    return value


def with_intervals(d: dict, level: float) -> dict:
    """The per-method means the plots draw, each with its t-interval over seeds (stats.group_intervals):
    the accuracy table's top1_lo/top1_hi, the quantisation table's, and the compute table (accuracy
    against measured inversion seconds, per budget)."""
    out = {}
    acc, keys = d["accuracy"], ["teacher", "sweep", "tag"]
    if not acc.empty:
        iv = S.group_intervals(d["distill"], keys, "top1_pct", level)
        out["accuracy"] = acc.merge(iv.rename(columns={"lo": "top1_lo", "hi": "top1_hi", "level": "top1_level"})
                                    [keys + ["top1_lo", "top1_hi", "top1_level"]], on=keys, how="left")
    q = d["quantize_table"]
    if not q.empty:
        raw = d["quantize"].assign(source=d["quantize"].tag.fillna(d["quantize"].calibration))
        iv = S.group_intervals(raw, ["teacher", "source", "bits"], "top1_pct", level)
        out["quantize_table"] = q.merge(iv.rename(columns={"lo": "top1_lo", "hi": "top1_hi", "n": "seeds"})
                                        [["teacher", "source", "bits", "top1_lo", "top1_hi", "seeds"]],
                                        on=["teacher", "source", "bits"], how="left")
    iso = d["iso"]
    if iso.empty:
        out["compute"] = pd.DataFrame()
    else:
        keys = ["teacher", "sweep", "tag", "family"]
        top = S.group_intervals(iso, keys, "top1_pct", level).rename(
            columns={"mean": "top1_mean", "lo": "top1_lo", "hi": "top1_hi", "n": "seeds"})
        sec = iso.groupby(keys, sort=False)["inversion_seconds"].mean().rename("seconds_mean").reset_index()
        out["compute"] = top.merge(sec, on=keys, how="left")
    return out


def write_tables(d: dict, claims: pd.DataFrame, missing: list, why: str, out: str) -> None:
    write_table(C.summary(claims), out, "verdicts", title="Verdicts: every claim of the paper, every part",
                group=("claim", "claim_verdict", "statement"), nowrap=("claim_verdict", "interval", "verdict"))
    write_table(claims, out, "claims")
    write_table(d["accuracy"], out, "accuracy", f"accuracy track not run: {why}")
    write_table(d["variance"], out, "variance", "one student per pool: no variance components")
    write_table(d["compute"], out, "compute", "the iso-compute control is off")
    write_table(d["differences"], out, "differences", "no paired differences")
    write_table(d["power"], out, "power", "no paired differences")
    write_table(d["quantize_table"], out, "quantization", "quantisation is off")
    write_table(d["efficiency"], out, "efficiency", "efficiency track not run")
    write_table(d["theorem1"].drop(columns=["samples_a", "samples_b"], errors="ignore"), out, "theorem1",
                "efficiency track not run")
    write_table(d["timing"], out, "timing", "nothing was timed")
    write_table(collect.without_measured(d["teachers"]), out, "teachers", f"no teacher: {why}")
    write_table(d["versions"], out, "versions", "no jobs recorded versions")
    write_table(pd.DataFrame(missing), out, "skipped", "nothing was skipped")


def real_images(d: dict, data: dict):
    """(images, labels) of the grid's teacher's real test set and the dataset's class names, or
    (None, names or None) when the data is not at hand (the grid then has no real row)."""
    from pri.files import data as D

    if not d["first"]:
        return None, None
    teacher = sorted(d["first"])[0]
    t = d["teachers"][d["teachers"].teacher == teacher] if not d["teachers"].empty else d["teachers"]
    name = (data.get(teacher) or {}).get("dataset") or (t.dataset.iloc[0] if len(t) else None)
    names = list(D.FASHION_MNIST_CLASSES) if name == "fashion_mnist" else \
        [str(i) for i in range(10)] if name == "digits" else None
    try:
        x, y, meta = D.load_dataset(name, (data.get(teacher) or {}).get("data_root"), "test")
    except Exception as e:  # noqa: BLE001 - the dataset is optional here: no real row, say why
        print(f"synthetic grid: no real images ({type(e).__name__}: {str(e)[:200]})")
        return None, names
    return (x, y), meta.get("class_names") or names


def draw(d: dict, claims: pd.DataFrame, why: str, out: str, level: float, data: dict) -> None:
    P = lambda n: os.path.join(out, "plots", f"{n}.png")  # noqa: E731
    for name, ids in V.FOREST_GROUPS.items():
        plots.forest(claims, P(name), why, ids=ids)
    plots.accuracy_vs_sparsity(d["accuracy"], d["pools"], d["teachers"], P("accuracy_vs_sparsity"), why)
    real, names = real_images(d, data)
    plots.synthetic_grid(d["first"], P("synthetic_grid"), real=real, class_names=names, why=why)
    plots.pri_stages(d["first"], P("pri_stages"), why=why)
    plots.update_counts(d["updates"], P("update_counts"), why)
    plots.accuracy_vs_compute(d["compute"], P("accuracy_vs_compute"), why)
    plots.quantization(d["quantize_table"], P("quantization"), why)
    plots.flops_bars(d["flops"], P("flops"))
    plots.speedup(d["flops"], d["times"], P("speedup"), level=level)
    plots.active_tokens(d["curves"], d["efficiency_curves"], P("active_tokens"))


if __name__ == "__main__":
    raise SystemExit(main())
