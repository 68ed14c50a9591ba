"""Claim verdicts: one rule for every claim (analysis/stats.py), never a verdict without numbers.

Each claim is a region of a difference, worded as the paper words the claim ("outperforms":
superiority, > 0; "matches": equivalence, within +-delta; "up to": a best case), that collect.py
has already computed with its interval (paired by seed; crossed with the test images for
quantisation). A row per comparison carries n, the mean difference, the interval and its level,
the region and the rule. A claim of k parts is supported when every part's interval at the level
lies inside its region, and not supported when a part's interval at 1 - alpha/k is disjoint from
it (``ci_lo_k``/``ci_hi_k``); rows marked ``role`` = control or check are shown but do not vote.
"""
from __future__ import annotations

import math

import pandas as pd

from .collect import SPEED_TARGETS
from .vocabulary import ACCURACY, CLAIMS, PAPER, REGION_WHY
from .stats import (CONTROL_FAILED, CONTROL_PASSED, INCONCLUSIVE, LEVEL, NOT_RUN, NOT_SUPPORTED, NOT_TESTABLE,
                    SUPPORTED, Region, above, at_least, at_level, bonferroni, combine, part_verdict, verdict, within)


RULE = ("supported if the {level:.0%} interval of the difference lies inside the region, not supported if its "
        "{level_k:.1%} interval (1 - alpha/k, k = {k} parts) lies outside it, inconclusive otherwise ({how})")


def _row(cid, scale, ours, rule, verdict_, region: Region | str = "", d=None, part="", unit="", role="part"):
    """One part of a claim. ``region``: a Region (its text and numeric bounds go into the row:
    ``region_lo``/``region_hi``, infinite where open-ended, for plots to draw) or a text for a
    region that is no interval (an ordering); then the bounds are NaN. ``role``: part (decides the
    claim), control (an assay's positive control) or check (shown, not deciding)."""
    if verdict_ not in (NOT_RUN, NOT_TESTABLE) and (ours is None or ours == ""):
        verdict_ = INCONCLUSIVE
    text, lo, hi = ((region.text(unit), region.lo, region.hi) if isinstance(region, Region)
                    else (region, math.nan, math.nan))
    r = {"claim_id": cid, "claim": CLAIMS[cid], "part": part, "role": role, "scale": scale, "paper_value": PAPER[cid],
         "our_value": ours, "n": None, "mean_difference": None, "ci_lo": None, "ci_hi": None, "level": None,
         "parts": None, "ci_lo_k": None, "ci_hi_k": None, "level_k": None,
         "region": text, "region_lo": lo, "region_hi": hi, "unit": unit if isinstance(region, Region) else "",
         "region_why": REGION_WHY.get(cid, ""), "rule": rule, "verdict": verdict_}
    if d is not None:
        r.update(n=int(d["n"]), mean_difference=d["mean"], ci_lo=d["lo"], ci_hi=d["hi"], level=d["level"])
    return r


def _not_run(cid, why, verdict_=NOT_RUN):
    r = _row(cid, "-", why, "-", verdict_)
    r["claim_verdict"] = verdict_
    return [r]


def _wide(d, k: int) -> tuple[float, float, float]:
    """A difference's interval at 1 - alpha/k (its level's for one part), from its se and df."""
    level_k = bonferroni(d["level"], k)
    if k <= 1:
        return d["lo"], d["hi"], level_k
    se, df = d.get("se"), d.get("df")
    if se is None or df is None or pd.isna(se) or pd.isna(df):
        return d["lo"], d["hi"], level_k  # no interval to widen (one seed: infinite already)
    lo, hi = at_level(d["mean"], float(se), float(df), level_k)
    return lo, hi, level_k


def _fmt(x):
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"


def _ours(d, unit="points", units="seeds"):
    means = (f" ({d['a']} {d['a_mean']:.1f} vs {d['b']} {d['b_mean']:.1f})"
             if d.get("a_mean") is not None and not pd.isna(d.get("a_mean")) else f" ({d['a']} vs {d['b']})")
    images = (f" x {int(d['images_per_seed'])} test images" if d.get("metric") == "quant"
              and d.get("images_per_seed") is not None and pd.notna(d.get("images_per_seed")) else "")
    return (f"{d['a']} - {d['b']} = {_fmt(d['mean'])} {unit}, {d['level']:.0%} interval [{_fmt(d['lo'])}, "
            f"{_fmt(d['hi'])}], n = {d['n']} {units}{images}{means}")


def _part(d) -> str:
    where = "" if d["sweep"] == "main" else f"{d['sweep']}: "
    return f"{where}{d['a']} - {d['b']}" + (f" ({d['bits']})" if isinstance(d.get("bits"), str) else "")


def _select(diffs, comparison, select=None) -> list[dict]:
    sel = diffs[diffs.comparison == comparison] if not diffs.empty else diffs
    if select is not None and not sel.empty:
        sel = sel[sel.apply(select, axis=1)]
    return sel.to_dict("records")


def _judge(cid, parts, scale_of, part_of=_part, unit="points", gate=None) -> list[dict]:
    """The rows of a claim from its parts, ``[(difference row, Region), ...]``, every one judged
    with k = the number of parts that can decide (``gate(d)``: None, or the reason a part's assay
    is not testable here)."""
    why_not = {i: gate(d) if gate else None for i, (d, _) in enumerate(parts)}
    k = sum(1 for w in why_not.values() if w is None)
    rows = []
    for i, (d, region) in enumerate(parts):
        lo_k, hi_k, level_k = _wide(d, k)
        ours = _ours(d, unit)
        if why_not[i] is not None:
            v, ours = NOT_TESTABLE, f"{ours}; {why_not[i]}"
        else:
            v = part_verdict(d["lo"], d["hi"], lo_k, hi_k, region)
        r = _row(cid, scale_of(d), ours, RULE.format(level=d["level"], level_k=level_k, k=k, how=d["interval"]), v,
                 region, d, part_of(d), unit)
        r.update(parts=k, ci_lo_k=lo_k, ci_hi_k=hi_k, level_k=level_k)
        rows.append(r)
    return rows


def _claim(cid, diffs, spec, scale_of, missing, unit="points", gate=None, part_of=_part) -> list[dict]:
    """A claim from ``spec``: [(comparison, Region, select or None), ...], every matching
    difference a part."""
    parts = [(d, region) for comparison, region, select in spec for d in _select(diffs, comparison, select)]
    if not parts:
        return _not_run(cid, missing)
    return _judge(cid, parts, scale_of, part_of, unit, gate)


def accuracy_claims(diffs: pd.DataFrame, teachers: pd.DataFrame, cfg: dict, missing: list) -> list[dict]:
    """3a-7 and 9 from the paired differences, whichever student produced the accuracies."""
    delta = float(cfg.get("delta_top1", 3.0))
    datasets = dict(zip(teachers.teacher, teachers.dataset)) if not teachers.empty else {}
    models = dict(zip(teachers.teacher, teachers.model)) if not teachers.empty else {}

    def scale(d):
        return f"{models.get(d['teacher'], '?')} on {datasets.get(d['teacher'], '?')} (teacher {d['teacher']})"

    why = "; ".join(f"{m['key']}: {m['reason']}" for m in missing) or "no teacher distils in this configuration"
    if diffs.empty:
        return [r for c in ACCURACY
                for r in _not_run(c, f"accuracy track not run ({why})")]
    not_c100 = lambda d: datasets.get(d["teacher"]) != "cifar100"  # noqa: E731
    c100 = lambda d: datasets.get(d["teacher"]) == "cifar100"  # noqa: E731
    dmi_pri = diffs[diffs.comparison == "dmi-pri"]
    vmax = {t: g.v.max() for t, g in dmi_pri.groupby("teacher")} if not dmi_pri.empty else {}
    off = "not in this configuration's sweep"
    rows = []
    rows += _claim("3a", diffs, [("pri-smi", above(0.0), not_c100)], scale, off)
    rows += _claim("3b", diffs, [("pri-dmi", within(-delta, delta), None)], scale, off)
    rows += _claim("3c", diffs, [("dmi-pri", above(0.0), lambda d: d["v"] == vmax.get(d["teacher"]))], scale,
                   "needs DMI and PRI in the sweep")
    rows += _claim("4a", diffs, [("pri-smi", within(6.0, 19.0), c100)], scale,
                   "no CIFAR-100 teacher in this configuration (config/paper.yaml has them)")
    rows += quantisation_claim(diffs, scale, float(cfg.get("level", LEVEL)))
    rows += _claim("5", diffs, [("random-attention", within(-delta, delta), None)], scale,
                   "needs pri_random_v<V> and pri_v<V> in the sweep")
    rows += _claim("6", diffs, [(c, above(0.0), None) for c in ("oneclass pri-smi", "oneclass pri-dmi")], scale,
                   "one-class distillation is off (controls.one_class.class)")
    rows += _claim("7", diffs, [(c, above(0.0), None) for c in ("w1 smi-pri", "w1 dmi-pri")], scale,
                   "needs the teacher's confidence on DMI, SMI and PRI pools", unit="(W1 of max-softmax)")
    rows += _claim("9", diffs, [(c, at_least(-delta), None) for c in ("iso pri-dmi", "iso pri-smi")], scale,
                   "the iso-compute control is off (controls.iso_compute.budgets)")
    return _with_claim_verdicts(rows)


def quantisation_claim(diffs: pd.DataFrame, scale, level: float) -> list[dict]:
    """4b: PRI - SMI of quantised top-1 in the paper's [+0.07, +0.87] at every v and bit setting,
    each part judged only where the assay passes its positive control at that setting: top-1
    calibrated on real images above top-1 calibrated on Gaussian noise (interval above 0 at
    ``level``). A part whose control fails is "not testable here", with the control's numbers;
    the control rows are kept in the table (role control)."""
    ctrl = {(d["teacher"], d["bits"]): d for d in _select(diffs, "quant real-noise")}

    def gate(d):
        c = ctrl.get((d["teacher"], d["bits"]))
        if c is None:
            return f"no real and noise calibration baselines at {d['bits']} (the assay's control)"
        if not (c["lo"] > 0):
            return (f"the assay fails its control at {d['bits']}: real-data calibration does not beat noise "
                    f"calibration (real - noise = {_fmt(c['mean'])} [{_fmt(c['lo'])}, {_fmt(c['hi'])}] points), so "
                    "quantised accuracy cannot tell synthetic data from noise here")
        return None

    def scale4b(d):
        return scale(d) + ("" if d.get("teacher") is None else f", {d['bits']}")

    rows = _claim("4b", diffs, [("quant pri-smi", within(0.07, 0.87), None)], scale4b,
                  "no quantisation of SMI and PRI pools at matched sparsity in this configuration", gate=gate)
    for c in ctrl.values():
        ok = c["lo"] > 0
        r = _row("4b", scale4b(c), _ours(c, units="calibration draws each"),
                 f"the assay's positive control: real-data calibration must beat noise calibration (the {level:.0%} "
                 "interval above 0) before a quantisation difference decides anything",
                 CONTROL_PASSED if ok else CONTROL_FAILED, above(0.0), c, f"control: real - noise ({c['bits']})",
                 "points", role="control")
        rows.append(r)
    return rows


def _with_claim_verdicts(rows: list[dict]) -> list[dict]:
    """Every row gets its claim's overall verdict, combined over the claim's deciding parts."""
    for cid in dict.fromkeys(r["claim_id"] for r in rows):
        mine = [r for r in rows if r["claim_id"] == cid]
        if any("claim_verdict" in r for r in mine):
            overall = next(r["claim_verdict"] for r in mine if "claim_verdict" in r)
        else:
            overall = combine([r["verdict"] for r in mine if r.get("role", "part") == "part"])
        for r in mine:
            r["claim_verdict"] = overall
    return rows


def efficiency_claims(flops: pd.DataFrame, times: pd.DataFrame, speeds: pd.DataFrame, theorem: pd.DataFrame,
                      cfg: dict, enabled: bool) -> list[dict]:
    """Claims 1, 2a, 2b and 8 from collect's efficiency tables (``speeds``: collect.speed_table)."""
    level = float(cfg.get("level", LEVEL))
    rows = speed_claim(flops, times, speeds, cfg, enabled)
    rows += _ordering_claim("2a", flops, "fvcore_macs_per_image", 1e9, "GMAC", 0.0, enabled,
                            "paper scale, fvcore MACs per generated image (a deterministic count)")
    gpu = times[times["device"].astype(str).map(_on_gpu)] if not times.empty and "device" in times else pd.DataFrame()
    if gpu.empty:
        rows.append(_row("2b", "-", "peak GPU memory needs a GPU run of the efficiency track", "-", NOT_RUN))
    else:
        rows += _ordering_claim("2b", gpu, "peak_memory_mb", 1.0, "MiB", 0.02, enabled, "paper scale, GPU")
    rows += _theorem_claims(theorem, enabled, level)
    return _with_claim_verdicts(rows)


def _on_gpu(device: str) -> bool:
    return any(x in str(device).lower() for x in ("cuda", "nvidia", "h100", "h200", "a100", "gpu"))


def speed_claim(flops: pd.DataFrame, times: pd.DataFrame, speeds: pd.DataFrame, cfg: dict,
                enabled: bool) -> list[dict]:
    """Claim 1, a best case ("up to 10x faster than DMI and 2x than SMI"), in two sub-claims (vs
    DMI, vs SMI's default), each over the timed models (per model and precision, PRI at its
    largest v; collect.speed_table computes the speed-ups and intervals): supported when the best
    model's interval at 1 - alpha/m (m timed models: the best is chosen from the data) lies in the
    region; not supported when every model's interval at 1 - alpha/2 (two sub-claims) lies below
    it; inconclusive otherwise. Every model's row stays."""
    tol = float(cfg.get("speed_tolerance", 0.1))
    if times.empty:
        return _not_run("1", "efficiency track not run" if not enabled else "no timing results",
                        NOT_RUN if not enabled else INCONCLUSIVE)
    rows, subs = [], {}
    for ref, target in SPEED_TARGETS:
        mine = [_speed_row(s, times[(times.model == s["model"]) & _same(times.dtype, s["dtype"])], target, tol, flops)
                for s in ([] if speeds.empty else speeds[speeds.ref == ref].to_dict("records"))]
        subs[ref] = _best_case(mine, at_least(target * (1 - tol)))
        rows += mine
    if not rows:
        return _not_run("1", "no PRI and DMI timings", INCONCLUSIVE)
    overall = combine([v for v in subs.values() if v is not None])
    for r in rows:
        r["claim_verdict"] = overall
        r["our_value"] += f"; sub-claim vs {r['part'].rsplit(' vs ', 1)[1]}: {subs[r['part'].rsplit(' vs ', 1)[1]]}"
    return rows


def _same(column: pd.Series, value) -> pd.Series:
    """Rows of ``column`` equal to ``value``, a missing value matching a missing one."""
    return column.isna() if pd.isna(value) else column == value


def _best_case(rows: list[dict], region: Region) -> str | None:
    """The sub-claim's verdict from its models' rows (``_speed_row``)."""
    if not rows:
        return None
    usable = [r for r in rows if not r["timing_flag"]]
    best = max(usable, key=lambda r: r["mean_difference"], default=None)
    if best is not None and verdict(best["ci_lo_m"], best["ci_hi_m"], region) == SUPPORTED:
        return SUPPORTED
    if all(verdict(r["ci_lo_k"], r["ci_hi_k"], region) == NOT_SUPPORTED and not r["timing_unjudgeable"]
           for r in rows):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _speed_row(s: dict, g: pd.DataFrame, target: float, tol: float, flops: pd.DataFrame) -> dict:
    """One model's speed-up of PRI (largest v) over the reference (``s``: a row of
    collect.speed_table; ``g``: the model's timing rows), with the cost model's ideal as the
    guard: far above it (lower end above ideal x (1 + tol)) is a measurement error, far below it
    (upper end below ideal x (1 - tol)) is overhead the cost model does not count; either keeps
    the row from supporting. Stage times not monotone in the active tokens put the timing itself
    in doubt: the row decides nothing either way."""
    model, dtype, ref, level, m = s["model"], s["dtype"], s["ref"], s["level"], s["m"]
    p = g[g.tag == s["tag"]].iloc[0]
    speed, lo, hi, lo_k, hi_k, lo_m, hi_m = (s[k] for k in ("speedup", "lo", "hi", "lo_k", "hi_k", "lo_m", "hi_m"))
    level_k, level_m = s["level_k"], s["level_m"]
    ideal = _ideal_ratio(flops, model, ref, p.tag)
    if ref == "dmi" and not flops.empty and "ideal_speedup" in flops:  # collect's speed-up over DMI
        col = flops[(flops.model == model) & (flops.tag == p.tag)]["ideal_speedup"]
        ideal = float(col.iloc[0]) if len(col) and pd.notna(col.iloc[0]) else ideal
    region = at_least(target * (1 - tol))
    v = part_verdict(lo, hi, lo_k, hi_k, region)
    flags = []
    if not math.isnan(ideal) and not math.isnan(lo) and lo > ideal * (1 + tol):
        flags.append(f"far above the cost model's ideal {ideal:.1f}x (more than {tol:.0%}): a measurement error, "
                     "not support")
    if not math.isnan(ideal) and not math.isnan(hi) and hi < ideal * (1 - tol):
        flags.append(f"far below the cost model's ideal {ideal:.1f}x (more than {tol:.0%}): per-step overhead the "
                     "cost model does not count")
    if flags and v == SUPPORTED:
        v = INCONCLUSIVE
    unjudgeable = "monotone" in g and (g.monotone == False).any()  # noqa: E712 (None: not checked)
    if unjudgeable:  # the timing itself is in doubt: no verdict either way
        bad = "; ".join(x for x in g.non_monotone.dropna().unique() if x)
        flags.append(f"stage times not monotone in the active tokens ({bad}): timing not good enough to judge")
        v = INCONCLUSIVE
    dev = ",".join(sorted(g["device"].astype(str).unique()))
    hw = "GPU" if _on_gpu(dev) else "CPU"
    ours = (f"{p.tag} vs {ref}: {speed:.2f}x, {level:.0%} interval [{lo:.2f}, {hi:.2f}] over {int(p.repeats)} timing "
            f"repeats (cost model's ideal {ideal:.2f}x)" + "".join(f"; {f}" for f in flags))
    mode = ",".join(sorted(g["mode"].astype(str).unique()))
    r = _row("1", f"{hw}: {model}, {dtype}, {mode} on {dev}, T={int(p.iterations)}, timed batch {int(p.batch)}, "
             "random weights", ours,
             f"measured speed-up per generated image, the claim's {target:g}x with {tol:.0%} slack, a best case over "
             f"the {m} timed model(s): supported when the best model's {level_m:.1%} interval (1 - alpha/m) lies in "
             f"the region, not supported when every model's {level_k:.1%} interval (1 - alpha/2, two sub-claims) lies "
             "below it (Welch t on log times over the repeats)", v, region,
             part=f"{model} {dtype}: {p.tag} vs {ref}", unit="x")
    r.update(n=int(p.repeats), mean_difference=speed, ci_lo=lo, ci_hi=hi, level=level, parts=2, ci_lo_k=lo_k,
             ci_hi_k=hi_k, level_k=level_k, ci_lo_m=lo_m, ci_hi_m=hi_m, hardware=hw, ideal=ideal,
             timing_flag="; ".join(flags), timing_unjudgeable=bool(unjudgeable))
    return r


def _theorem_claims(theorem: pd.DataFrame, enabled: bool, level: float = LEVEL) -> list[dict]:
    """Claim 8: PRI's measured time per image over SMI*'s, per model and v, on the side of 1 the
    closed form predicts (the parts that decide, each judged with k = the timed v's); fvcore's
    PRI/SMI* MACs ratio per part against the closed form's region stays as a check row (a count:
    it cannot fail for a correct count, so it does not decide)."""
    if theorem.empty:
        return _not_run("8", "no Theorem 1 check", NOT_RUN if not enabled else INCONCLUSIVE)
    timed = theorem[theorem.part == "time (measured)"] if "part" in theorem else theorem.iloc[0:0]
    k = len(timed)
    rows = [_theorem_time_row(t, k, level) for t in timed.to_dict("records")]
    if not rows:
        rows.append(_row("8", "-", "no timed PRI and SMI* (efficiency.time_models and time_tags): only the MAC "
                         "check below", "-", NOT_RUN, part="time (measured)"))
    for t in theorem[theorem.part != "time (measured)"].itertuples():
        measured = t.fvcore if t.fvcore is not None and not pd.isna(t.fvcore) else None
        region = (Region(hi=1.0, hi_open=True) if t.part == "mlp" else
                  Region(hi=1.0) if t.predicted_holds else Region(lo=1.0, lo_open=True))
        v = verdict(measured, measured, region) if measured is not None else INCONCLUSIVE
        ours = (f"PRI/SMI* {t.part} MACs: fvcore {measured if measured is None else f'{measured:.3f}'}, cost model "
                f"{t.cost_model:.3f}, closed form {t.closed_form:.3f} (N/D = {t.n_over_d:.2f})")
        r = _row("8", f"{t.model}, v={t.v}", ours,
                 "a check, not deciding: fvcore's MACs of PRI over SMI* (SMI pruned at step 0 to PRI's mean patches) "
                 "inside the region the closed form predicts (a deterministic count)", v, region,
                 part=f"{t.part} MACs (check)", unit="PRI/SMI*", role="check")
        if measured is not None:  # a count, exact: its interval is the point itself
            r.update(mean_difference=measured, ci_lo=measured, ci_hi=measured)
        rows.append(r)
    return rows


def _theorem_time_row(t: dict, k: int, level: float) -> dict:
    region = Region(hi=1.0, hi_open=True) if t["predicted_holds"] else Region(lo=1.0)
    level_k = t["level_k"]  # 1 - alpha/k over the k timed rows (collect.theorem_time)
    # PRI's time over SMI*'s: SMI*'s "speed-up" over PRI
    est, lo, hi, lo_k, hi_k = (t[k] for k in ("measured", "measured_lo", "measured_hi", "measured_lo_k",
                                              "measured_hi_k"))
    v = part_verdict(lo, hi, lo_k, hi_k, region)
    hw = "GPU" if _on_gpu(t.get("device")) else "CPU"
    ours = (f"PRI/SMI* time per image {est:.3f}, {level:.0%} interval [{lo:.3f}, {hi:.3f}] over {int(t['repeats'])} timing "
            f"repeats; predicted {t['predicted']} (closed form, N/D = {t['n_over_d']:.2f}), cost model {t['cost_model']:.3f}")
    if t.get("monotone") is False:  # the timing itself is in doubt: no verdict either way
        ours += "; stage times not monotone in the active tokens: timing not good enough to judge"
        v = INCONCLUSIVE
    r = _row("8", f"{hw}: {t['model']}, v={t['v']}, {t.get('mode')} on {t.get('device')}", ours,
             RULE.format(level=level, level_k=level_k, k=k, how="Welch t on log times over the repeats") +
             "; the region is the side of 1 the closed form predicts", v, region, part="time (measured)",
             unit="PRI/SMI* time")
    r.update(n=int(t["repeats"]), mean_difference=est, ci_lo=lo, ci_hi=hi, level=level, parts=k, ci_lo_k=lo_k,
             ci_hi_k=hi_k, level_k=level_k)
    return r


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
    if lo == hi:
        return "exact (a count)"
    text = f"{pct}[{_num(lo)}, {_num(hi)}]"
    k, lo_k, hi_k = r.get("parts"), r.get("ci_lo_k"), r.get("ci_hi_k")
    if k is not None and pd.notna(k) and k > 1 and lo_k is not None and pd.notna(lo_k) and pd.notna(hi_k):
        text += f"; {float(r['level_k']):.1%} (1 - alpha/{int(k)}) [{_num(lo_k)}, {_num(hi_k)}]"
    return text


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
