"""Claim verdicts: one rule for every claim (analysis/stats.py), never a verdict without numbers.

Each claim is a region of a difference that collect.py has already computed with its interval
(paired by seed; bootstrapped over images for per-image data). A row per comparison carries n,
the mean difference, the interval and its level, the region and the rule; ``claim_verdict`` combines
a claim's rows (every part supported -> supported; any part not supported -> not supported).
"""
from __future__ import annotations

import math

import pandas as pd

from .collect import Comparison
from .stats import (INCONCLUSIVE, LEVEL, NOT_RUN, NOT_SUPPORTED, SUPPORTED, Region, above, at_least, combine,
                    verdict, within)

CLAIMS = {
    "1": "Per generated image, PRI inverts up to 10x faster than DMI and 2x faster than SMI (DeiT family)",
    "2a": "FLOPs per generated image: PRI <= SMI <= DMI",
    "2b": "Peak GPU memory: PRI <= SMI <= DMI",
    "3a": "Accuracy at matched sparsity: PRI >= SMI in every setting",
    "3b": "PRI matches DMI's accuracy",
    "3c": "DMI ahead of PRI at 86% sparsity (v = 7)",
    "4a": "CIFAR-100 distillation: PRI - SMI between +6 and +19 points",
    "4b": "ImageNet W8/A8 quantisation: PRI - SMI between +0.07 and +0.87 points",
    "5": "Re-Birth: random patch selection gives accuracy close to attention selection",
    "6": "One-class distillation: a student from one class's PRI images generalises better than from SMI or DMI",
    "7": "Teacher confidence on PRI images is distributed closer to real data than on DMI or SMI images",
    "8": "Theorem 1 holds when measured (MLP: PRI < SMI*; attention: PRI <= SMI* when N/D <= 6v/(2v-1))",
    "9": "(the suite's, not the paper's) At equal inversion compute PRI's student is at least DMI's and SMI's",
}
PAPER = {"1": "up to 10x vs DMI, 2x vs SMI", "2a": "PRI <= SMI <= DMI", "2b": "PRI <= SMI <= DMI",
         "3a": "PRI >= SMI in every setting", "3b": "PRI ~ DMI", "3c": "DMI > PRI at v=7 (DeiT-Tiny distillation)",
         "4a": "+6 to +19 points", "4b": "+0.07 to +0.87 points", "5": "random ~ attention selection",
         "6": "PRI > SMI, DMI", "7": "PRI closer to real", "8": "holds", "9": "-"}

# every paired difference a claim (or a control of the report) reads; collect.py computes them
COMPARISONS = [
    Comparison("pri-smi", "pri", "smi", "same"),
    Comparison("pri-dmi", "pri", "dmi", "a"),
    Comparison("dmi-pri", "dmi", "pri", "b"),
    Comparison("random-attention", "pri_random", "pri", "same"),
    Comparison("pri-dmi_updates", "pri", "dmi_updates", "same"),
    Comparison("smi_rerank-smi", "smi_rerank", "smi", "same"),
    Comparison("oneclass pri-smi", "pri", "smi", "same", kind="oneclass"),
    Comparison("oneclass pri-dmi", "pri", "dmi", "a", kind="oneclass"),
    Comparison("iso pri-dmi", "pri", "dmi", "a", kind="iso"),
    Comparison("iso pri-smi", "pri", "smi", "same", kind="iso"),
    Comparison("quant pri-smi", "pri", "smi", "same", metric="quant"),
    Comparison("w1 smi-pri", "smi", "pri", "same", metric="w1"),
    Comparison("w1 dmi-pri", "dmi", "pri", "b", metric="w1"),
]
RULE = ("supported if the {level:.0%} interval of the difference lies inside the region, not supported if it lies "
        "outside it, inconclusive otherwise ({how})")


def _row(cid, scale, ours, rule, verdict_, region: Region | str = "", d=None, part="", unit=""):
    """One part of a claim. ``region``: a Region (its text and numeric bounds go into the row:
    ``region_lo``/``region_hi``, infinite where open-ended, for plots to draw) or a text for a
    region that is no interval (an ordering); then the bounds are NaN."""
    if verdict_ != NOT_RUN and (ours is None or ours == ""):
        verdict_ = INCONCLUSIVE
    text, lo, hi = ((region.text(unit), region.lo, region.hi) if isinstance(region, Region)
                    else (region, math.nan, math.nan))
    r = {"claim_id": cid, "claim": CLAIMS[cid], "part": part, "scale": scale, "paper_value": PAPER[cid],
         "our_value": ours, "n": None, "mean_difference": None, "ci_lo": None, "ci_hi": None, "level": None,
         "region": text, "region_lo": lo, "region_hi": hi, "unit": unit if isinstance(region, Region) else "",
         "rule": rule, "verdict": verdict_}
    if d is not None:
        r.update(n=int(d["n"]), mean_difference=d["mean"], ci_lo=d["lo"], ci_hi=d["hi"], level=d["level"])
    return r


def _fmt(x):
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"


def _ours(d, unit="points"):
    means = (f" ({d['a']} {d['a_mean']:.1f} vs {d['b']} {d['b_mean']:.1f})"
             if d.get("a_mean") is not None and not pd.isna(d.get("a_mean")) else f" ({d['a']} vs {d['b']})")
    return (f"{d['a']} - {d['b']} = {_fmt(d['mean'])} {unit}, {d['level']:.0%} interval [{_fmt(d['lo'])}, "
            f"{_fmt(d['hi'])}], n = {d['n']} seeds{means}")


def _part(d) -> str:
    where = "" if d["sweep"] == "main" else f"{d['sweep']}: "
    return f"{where}{d['a']} - {d['b']}" + (f" ({d['bits']})" if isinstance(d.get("bits"), str) else "")


def _difference_claim(cid, diffs, comparison, region: Region, scale_of, part_of=_part,
                      unit="points", select=None, missing="not in this configuration's sweep"):
    rows = []
    sel = diffs[diffs.comparison == comparison] if not diffs.empty else diffs
    if select is not None and not sel.empty:
        sel = sel[sel.apply(select, axis=1)]
    if sel.empty:
        r = _row(cid, "-", missing, "-", NOT_RUN)
        r["claim_verdict"] = NOT_RUN
        return [r]
    for d in sel.to_dict("records"):
        v = verdict(d["lo"], d["hi"], region)
        rows.append(_row(cid, scale_of(d), _ours(d, unit), RULE.format(level=d["level"], how=d["interval"]), v,
                         region, d, part_of(d), unit))
    overall = combine([r["verdict"] for r in rows])
    for r in rows:
        r["claim_verdict"] = overall
    return rows


def accuracy_claims(diffs: pd.DataFrame, teachers: pd.DataFrame, cfg: dict, missing: list) -> list[dict]:
    delta = float(cfg.get("delta_top1", 3.0))
    dq = float(cfg.get("delta_quant", 0.5))
    datasets = dict(zip(teachers.teacher, teachers.dataset)) if not teachers.empty else {}
    models = dict(zip(teachers.teacher, teachers.model)) if not teachers.empty else {}

    def scale(d):
        return f"{models.get(d['teacher'], '?')} on {datasets.get(d['teacher'], '?')} (teacher {d['teacher']})"

    why = "; ".join(f"{m['key']}: {m['reason']}" for m in missing) or "no teacher distils in this configuration"
    if diffs.empty:
        rows = [_row(c, "-", f"accuracy track not run ({why})", "-", NOT_RUN)
                for c in ("3a", "3b", "3c", "4a", "4b", "5", "6", "7", "9")]
        for r in rows:
            r["claim_verdict"] = NOT_RUN
        return rows
    not_c100 = lambda d: datasets.get(d["teacher"]) != "cifar100"  # noqa: E731
    rows = []
    rows += _difference_claim("3a", diffs, "pri-smi", at_least(-delta), scale, select=not_c100)
    rows += _difference_claim("3b", diffs, "pri-dmi", at_least(-delta), scale)
    dmi_pri = diffs[diffs.comparison == "dmi-pri"]
    vmax = {t: g.v.max() for t, g in dmi_pri.groupby("teacher")} if not dmi_pri.empty else {}
    rows += _difference_claim("3c", diffs, "dmi-pri", above(0.0), scale,
                              select=lambda d: d["v"] == vmax.get(d["teacher"]),
                              missing="needs DMI and PRI in the sweep")
    rows += _difference_claim("4a", diffs, "pri-smi", within(6.0, 19.0), scale,
                              select=lambda d: datasets.get(d["teacher"]) == "cifar100",
                              missing="no CIFAR-100 teacher in this configuration (config/paper.yaml has them)")
    imagenet = lambda d: datasets.get(d["teacher"]) == "imagefolder"  # noqa: E731
    q = diffs[(diffs.comparison == "quant pri-smi") & (diffs.bits == "W8A8")] if "bits" in diffs else diffs.iloc[0:0]
    rows += _difference_claim(
        "4b", q, "quant pri-smi", within(0.07, 0.87),
        lambda d: scale(d) + ("" if imagenet(d) else ", W8A8: the small-scale analogue of ImageNet quantisation"),
        missing="no W8A8 quantisation of SMI and PRI pools at matched sparsity in this configuration")
    rows += _difference_claim("5", diffs, "random-attention", within(-delta, delta), scale,
                              missing="needs pri_random_v<V> and pri_v<V> in the sweep")
    rows += _combined("6", diffs, ["oneclass pri-smi", "oneclass pri-dmi"], above(0.0), scale,
                      "one-class distillation is off (controls.one_class.class)")
    rows += _combined("7", diffs, ["w1 smi-pri", "w1 dmi-pri"], above(0.0), scale,
                      "needs the teacher's confidence on DMI, SMI and PRI pools", unit="(W1 of max-softmax)")
    rows += _combined("9", diffs, ["iso pri-dmi", "iso pri-smi"], at_least(-delta), scale,
                      "the iso-compute control is off (controls.iso_compute.budgets)")
    del dq  # quantisation differences are judged against the paper's range, not delta_quant
    return rows


def _combined(cid, diffs, comparisons, region, scale, missing, unit="points", part_of=_part):
    rows = []
    for c in comparisons:
        rows += [r for r in _difference_claim(cid, diffs, c, region, scale, unit=unit, part_of=part_of)
                 if r["verdict"] != NOT_RUN]
    if not rows:
        r = _row(cid, "-", missing, "-", NOT_RUN)
        r["claim_verdict"] = NOT_RUN
        return [r]
    overall = combine([r["verdict"] for r in rows])
    for r in rows:
        r["claim_verdict"] = overall
    return rows


def efficiency_claims(flops: pd.DataFrame, times: pd.DataFrame, theorem: pd.DataFrame, cfg: dict,
                      enabled: bool) -> list[dict]:
    tol = float(cfg.get("speed_tolerance", 0.1))
    level = float(cfg.get("level", LEVEL))
    rows = []
    # 1: per model and dtype, PRI at its largest v against DMI and against SMI's default
    if times.empty:
        rows.append(_row("1", "-", "efficiency track not run" if not enabled else "no timing results", "-",
                         NOT_RUN if not enabled else INCONCLUSIVE))
    else:
        for (model, dtype), g in times.groupby(["model", "dtype"], dropna=False):
            pri = g[g.method == "pri"]
            if pri.empty or "dmi" not in set(g.method):
                continue
            p = pri.loc[pri.v.idxmax()]
            ideal = flops[(flops.model == model) & (flops.tag == p.tag)]["ideal_speedup"] if not flops.empty else []
            ideal = float(ideal.iloc[0]) if len(ideal) else math.nan
            smi = g[g.method == "smi_default"]
            for ref, target, speed, lo, hi in (
                    ("dmi", 10.0, p.measured_speedup, p.speedup_lo, p.speedup_hi),
                    ("smi_default",) + ((2.0,) + _ratio(smi, p) if not smi.empty else (2.0, None, None, None))):
                if speed is None or (isinstance(speed, float) and math.isnan(speed)):
                    continue
                region = at_least(target * (1 - tol))
                v = verdict(lo, hi, region)
                note = ""
                ideal_ref = ideal if ref == "dmi" else _ideal_ratio(flops, model, "smi_default", p.tag)
                if not math.isnan(ideal_ref) and lo is not None and not math.isnan(lo) and lo > ideal_ref * (1 + tol):
                    v = INCONCLUSIVE
                    note = (f"; above the cost model's ideal {ideal_ref:.1f}x by more than {tol:.0%}: a measurement "
                            "error, not support")
                mode = ",".join(sorted(g["mode"].astype(str).unique()))
                dev = ",".join(sorted(g["device"].astype(str).unique()))
                ours = (f"{p.tag} vs {ref}: {speed:.2f}x, {level:.0%} interval [{lo:.2f}, {hi:.2f}] over "
                        f"{int(p.repeats)} timing repeats (cost model's ideal {ideal_ref:.2f}x){note}")
                r = _row("1", f"{model}, {dtype}, {mode} on {dev}, T={int(p.iterations)}, timed batch {int(p.batch)}, "
                         "random weights", ours,
                         "measured speed-up per generated image: " + RULE.format(level=level, how="Welch t on log "
                         "times over the repeats") + f"; the claim's {target:g}x with {tol:.0%} slack",
                         v, region, part=f"{model} {dtype}: {p.tag} vs {ref}", unit="x")
                r.update(n=int(p.repeats), mean_difference=speed, ci_lo=lo, ci_hi=hi, level=level)
                rows.append(r)
        if not any(r["claim_id"] == "1" for r in rows):
            rows.append(_row("1", "-", "no PRI and DMI timings", "-", INCONCLUSIVE))
    rows += _ordering_claim("2a", flops, "fvcore_macs_per_image", 1e9, "GMAC", 0.0, enabled,
                            "paper scale, fvcore MACs per generated image (a deterministic count)")
    gpu = times[times["device"].astype(str).str.contains("cuda|NVIDIA|H100|H200|A100", case=False)] \
        if not times.empty and "device" in times else pd.DataFrame()
    if gpu.empty:
        rows.append(_row("2b", "-", "peak GPU memory needs a GPU run of the efficiency track", "-", NOT_RUN))
    else:
        rows += _ordering_claim("2b", gpu, "peak_memory_mb", 1.0, "MiB", 0.02, enabled, "paper scale, GPU")
    rows += _theorem_claims(theorem, enabled)
    return _with_claim_verdicts(rows)


def _with_claim_verdicts(rows: list[dict]) -> list[dict]:
    """Every row gets its claim's overall verdict, combined over the claim's parts."""
    for cid in dict.fromkeys(r["claim_id"] for r in rows):
        mine = [r for r in rows if r["claim_id"] == cid]
        overall = combine([r["verdict"] for r in mine])
        for r in mine:
            r["claim_verdict"] = overall
    return rows


def _theorem_claims(theorem: pd.DataFrame, enabled: bool) -> list[dict]:
    """Claim 8: fvcore's PRI/SMI* MACs ratio per model, v and part, inside the region the closed
    form predicts (a count: its interval is the point itself)."""
    rows = []
    if theorem.empty:
        rows.append(_row("8", "-", "no Theorem 1 check", "-", NOT_RUN if not enabled else INCONCLUSIVE))
    else:
        for t in theorem.itertuples():
            measured = t.fvcore if t.fvcore is not None and not pd.isna(t.fvcore) else None
            region = (Region(hi=1.0, hi_open=True) if t.part == "mlp" else
                      Region(hi=1.0) if t.predicted_holds else Region(lo=1.0, lo_open=True))
            v = verdict(measured, measured, region) if measured is not None else INCONCLUSIVE
            ours = (f"PRI/SMI* {t.part} MACs: fvcore {measured if measured is None else f'{measured:.3f}'}, cost model "
                    f"{t.cost_model:.3f}, closed form {t.closed_form:.3f} (N/D = {t.n_over_d:.2f})")
            r = _row("8", f"{t.model}, v={t.v}", ours,
                     "fvcore's MACs of PRI over SMI* (SMI pruned at step 0 to PRI's mean patches) inside the "
                     "region the closed form predicts (a deterministic count)", v, region, part=t.part,
                     unit="PRI/SMI* MACs")
            if measured is not None:  # a count, exact: its interval is the point itself
                r.update(mean_difference=measured, ci_lo=measured, ci_hi=measured)
            rows.append(r)
    return rows


def _ratio(smi: pd.DataFrame, p) -> tuple:
    """SMI(default)/PRI speed-up with its interval, from their speed-ups over DMI's samples."""
    import json

    from .collect import _welch_log_interval

    s = smi.iloc[0]
    return _welch_log_interval(json.loads(s.seconds_samples), json.loads(p.seconds_samples), LEVEL)


def _ideal_ratio(flops, model, ref, tag) -> float:
    f = flops[flops.model == model].set_index("tag")["cost_macs_per_image"] if not flops.empty else {}
    return float(f[ref] / f[tag]) if ref in f and tag in f else math.nan


def _ordering_claim(cid, df, col, unit, unit_name, slack, enabled, scale):
    """PRI <= SMI <= DMI per model: every PRI v at most its matched SMI (where run), the best PRI
    at most SMI's default schedule, and SMI default at most DMI (with relative ``slack``)."""
    if df.empty or col not in df:
        return [_row(cid, "-", "no measurements", "-", NOT_RUN if not enabled else INCONCLUSIVE)]
    rows = []
    le = lambda a, b: a <= b * (1 + slack)  # noqa: E731
    for model, g in df.groupby("model"):
        g = g.dropna(subset=[col])
        by = {(r.method, None if pd.isna(r.v) else int(r.v)): getattr(r, col) for r in g.itertuples()}
        pri = {v: x for (m, v), x in by.items() if m == "pri"}
        if ("dmi", None) not in by or ("smi_default", None) not in by or not pri:
            continue
        dmi, smi = by[("dmi", None)], by[("smi_default", None)]
        good = le(smi, dmi) and le(min(pri.values()), smi)
        for v, x in pri.items():
            if ("smi", v) in by:
                good = good and le(x, by[("smi", v)]) and le(by[("smi", v)], dmi)
        ours = ", ".join(f"{t} {x / unit:.3g}" for t, x in zip(g.tag, g[col])) + f" {unit_name}/image"
        rows.append(_row(cid, f"{model}, {scale}", ours,
                         "per model: every PRI v <= SMI at the same sparsity <= DMI, and the best PRI <= SMI's default "
                         "<= DMI" + (f" ({slack:.0%} slack)" if slack else ""), SUPPORTED if good else NOT_SUPPORTED,
                         "PRI <= SMI <= DMI"))
    return rows or [_row(cid, "-", "needs DMI, SMI's default and PRI", "-", INCONCLUSIVE)]


def table(rows: list[dict]) -> pd.DataFrame:
    """The verdict rows in claim order (1, 2a, 2b, 3a, ...)."""
    claims = pd.DataFrame(rows)
    key = claims["claim_id"].map(lambda c: (int("".join(ch for ch in c if ch.isdigit())), c))
    return claims.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)


def _num(x, unit=""):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    return f"{x:.3g}" + (f" {unit}" if unit else "")


def _interval_text(r) -> str:
    lo, hi = r.get("ci_lo"), r.get("ci_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return ""
    if math.isinf(lo) or math.isinf(hi):
        return f"none (n = {int(r['n']) if pd.notna(r.get('n')) else '?'}: no interval)"
    level = r.get("level")
    pct = f"{float(level):.0%} " if level is not None and pd.notna(level) else ""
    return f"{pct}[{_num(lo)}, {_num(hi)}]" if lo != hi else "exact (a count)"


def summary(claims: pd.DataFrame) -> pd.DataFrame:
    """The verdict table a reader reads first: one row per part of every claim (a claim that did not
    run: one row with the reason), with its scale, n, estimate, interval, region and verdict."""
    out = []
    for r in claims.to_dict("records"):
        est = _num(r.get("mean_difference"))
        out.append({"claim": r["claim_id"], "claim_verdict": r.get("claim_verdict") or r["verdict"],
                    "statement": r["claim"], "part": r["part"] or "-", "scale": r["scale"],
                    "n": "" if r.get("n") is None or pd.isna(r.get("n")) else int(r["n"]),
                    "estimate": est or r["our_value"], "interval": _interval_text(r), "region": r["region"] or "-",
                    "verdict": r["verdict"]})
    return pd.DataFrame(out)
