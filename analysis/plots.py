"""Plots for report.html (matplotlib, Agg). A plot draws numbers the analysis' tables hold (means,
intervals, regions); it computes no statistic of its own. An interval that does not exist (one
seed, or an infinite one) is marked with a hollow marker and "no interval", never drawn on a
blown-up axis. A plot with no data says why."""
from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pri.core.schedules import REGISTRY  # noqa: E402
from pri.files.io import atomic_path  # noqa: E402

from . import stats  # noqa: E402

FAMILY_ORDER = [m.family for m in REGISTRY.values()]
VERDICT_COLORS = {stats.SUPPORTED: "tab:green", stats.NOT_SUPPORTED: "tab:red", stats.INCONCLUSIVE: "tab:grey",
                  stats.NOT_TESTABLE: "tab:purple", stats.CONTROL_PASSED: "tab:blue", stats.CONTROL_FAILED: "tab:orange"}
NO_INTERVAL = "no interval"


MAX_HEIGHT_PX = 880  # report.html centres an image vertically: a taller one loses its top off-screen


def save(fig, path, dpi=110, **kw) -> None:
    """Write a figure under a temporary name and rename it: a half-written PNG never has the final
    name. Its resolution is lowered (not below 72 dpi) where needed to keep it within a screen's height."""
    dpi = max(72.0, min(dpi, MAX_HEIGHT_PX / fig.get_size_inches()[1]))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", **kw)
    plt.close(fig)


def _empty(path, title, why):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}\n\n" + textwrap.fill(f"not run: {why}", 80), ha="center", va="center")
    save(fig, path, dpi=100)


def _finite(x) -> bool:
    return x is not None and not pd.isna(x) and math.isfinite(float(x))


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def point_with_interval(ax, x, y, lo, hi, color, horizontal=False, label=None, marker="o", size=6):
    """A mean with its interval from a table; an absent or infinite interval: a hollow marker
    (returns False, so a caller can say "no interval"), never an error bar."""
    ok = _finite(lo) and _finite(hi)
    if ok:
        err = [[max(0.0, (x if horizontal else y) - lo)], [max(0.0, hi - (x if horizontal else y))]]
        kw = {"xerr": err} if horizontal else {"yerr": err}
        ax.errorbar([x], [y], fmt=marker, color=color, ms=size, capsize=3, lw=1.4, label=label, **kw)
    else:
        ax.plot([x], [y], marker, mfc="white", mec=color, mew=1.6, ms=size + 1, label=label)
    return ok


def accuracy_vs_sparsity(acc: pd.DataFrame, pools: pd.DataFrame, teachers: pd.DataFrame, path, why=""):
    """Each method's mean student top-1 with its interval over seeds (the accuracy table's
    top1_lo/top1_hi), against the measured sparsity of its pools, per teacher (main sweep)."""
    if acc.empty or "top1_mean" not in acc:
        return _empty(path, "Accuracy vs sparsity", why or "no distillation results")
    df = acc[acc.sweep == "main"]
    ts = sorted(df.teacher.unique())
    fig, axes = plt.subplots(1, len(ts), figsize=(7.5 * len(ts), 4.6), squeeze=False)
    colors = dict(zip(FAMILY_ORDER, plt.cm.tab10.colors * 3))
    for ax, t in zip(axes[0], ts):
        d = df[df.teacher == t].assign(x=lambda f: 100 * f.sparsity)
        hollow = False
        fams = [f for f in FAMILY_ORDER if f in set(d.family)]
        for k, fam in enumerate(fams):
            g = d[d.family == fam].sort_values("x")
            x = g.x + DODGE * (k - (len(fams) - 1) / 2)  # side by side where methods share a sparsity
            ax.plot(x, g.top1_mean, "-", color=colors[fam], lw=0.8, alpha=0.6)
            for i, (xi, r) in enumerate(zip(x, g.itertuples())):
                hollow |= not point_with_interval(ax, xi, r.top1_mean, r.top1_lo, r.top1_hi, colors[fam],
                                                  label=fam if i == 0 else None)
        _reference_lines(ax, teachers, pools, t)
        _percent_axis(ax)
        ax.set(xlabel="patches removed per synthetic image (%, measured; methods set apart by a little)",
               ylabel="student top-1 (%)",
               title=f"teacher {t}: mean over seeds with its {_level(acc)} interval" +
                     ("\n(hollow: one seed, no interval)" if hollow else ""))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.tight_layout()
    save(fig, path)


DODGE = 0.8  # sparsity points between methods drawn at the same sparsity


def _percent_axis(ax):
    """A top-1 axis never beyond 0-100 %: an interval wider than that runs off the edge."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, -2.0), min(hi, 102.0))


def _level(df) -> str:
    lv = df["top1_level"].dropna() if "top1_level" in df else pd.Series(dtype=float)
    return f"{float(lv.iloc[0]):.0%}" if len(lv) else "t"


def _reference_lines(ax, teachers, pools, t):
    row = teachers[teachers.teacher == t] if not teachers.empty else teachers
    if not row.empty and pd.notna(row.iloc[0]["top1_pct"]):
        ax.axhline(row.iloc[0]["top1_pct"], ls="--", c="grey", lw=1, label="teacher")
    nc = pools[pools.teacher == t]["num_classes"].dropna() if not pools.empty else pd.Series(dtype=float)
    if len(nc):
        ax.axhline(100.0 / float(nc.iloc[0]), ls=":", c="red", lw=1, label="chance")


def _to_rgb(img):
    x = img.float() / 255.0 if not img.is_floating_point() else img.float().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    return x.permute(1, 2, 0).numpy()


def synthetic_grid(first: dict, path, real=None, class_names=None, max_classes=20, why=""):
    """One column per class (named), one row per method (its first image of that class, first
    seed) and, when the dataset is at hand, a first row of real test images to compare with.
    ``real``: (images, labels) of the real test set or None; ``class_names``: the dataset's."""
    if not first:
        return _empty(path, "Synthetic images", why or "no pools")
    teacher = sorted(first)[0]
    pools = first[teacher]
    nc = max(int(p["pool"]["labels"].max()) + 1 for p in pools.values())
    nc = max(nc, len(class_names or []))
    classes = list(range(min(nc, max_classes)))
    rows = ([("real (test set)", real)] if real is not None else []) + \
        [(tag, (p["pool"]["images"], p["pool"]["labels"])) for tag, p in sorted(pools.items(), key=_family_key)]
    fig, axes = plt.subplots(len(rows), len(classes), figsize=(0.85 * len(classes) + 1.6, 0.85 * len(rows) + 0.7),
                             squeeze=False)
    for r, (name, (images, labels)) in enumerate(rows):
        for c in classes:
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            idx = (labels == c).nonzero().flatten()
            if len(idx):
                img = images[int(idx[0])]
                ax.imshow(_to_rgb(img if hasattr(img, "permute") else img[0]), interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=7, color="grey")
            if r == 0:
                ax.set_title(_wrap(class_names[c] if class_names and c < len(class_names) else f"class {c}", 12),
                             fontsize=7)
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    more = f"; the first {len(classes)} of {nc} classes" if nc > len(classes) else ""
    fig.suptitle(f"teacher {teacher}, first seed: each method's first image of every class{more}"
                 + ("" if real is not None else " (real images: dataset not at hand)"), fontsize=9)
    fig.tight_layout()
    save(fig, path)


def _family_key(item):
    """(tag, pool entry) in the registry's family order, then by v."""
    fam, v = item[1].get("family"), item[1].get("v")
    return FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER), 0 if v is None else v, item[0]


def pri_stages(first: dict, path, rows=4, why=""):
    cands = [(t, tag) for t in sorted(first) for tag, d in first[t].items() if d["method"] == "pri"]
    if not cands:
        return _empty(path, "PRI stages", why or "no PRI pools")
    t, tag = max(cands, key=lambda c: first[c[0]][c[1]]["v"])
    p = first[t][tag]["pool"]
    v = int(p["stage"].max()) + 1
    trajs = sorted(set(p["trajectory"].tolist()))[:rows]
    fig, axes = plt.subplots(len(trajs), v + 1, figsize=(1.3 * (v + 1), 1.4 * len(trajs)), squeeze=False)
    for r, b in enumerate(trajs):
        idx = (p["trajectory"] == b).nonzero().flatten()
        union = p["images"][idx].sum(0).clamp(max=255).to(p["images"].dtype)
        for c in range(v + 1):
            ax = axes[r][c]
            img = p["images"][idx[c]] if c < v else union
            ax.imshow(_to_rgb(img), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"stage {c + 1}" if c < v else "union", fontsize=7)
    fig.suptitle(f"{tag}, teacher {t}: {v} sparse images per trajectory", fontsize=9)
    fig.tight_layout()
    save(fig, path)


def _model_panels(models, height_per_row, rows):
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 1.0 + height_per_row * rows),
                             squeeze=False)
    return fig, axes[0]


def flops_bars(flops: pd.DataFrame, path, why=""):
    """MACs per generated image per schedule (fvcore's count where measured, else the cost model's),
    horizontal bars with the schedules named and the value printed."""
    if flops.empty:
        return _empty(path, "MACs per generated image", why or "no efficiency results")
    col = "fvcore_macs_per_image" if "fvcore_macs_per_image" in flops and flops.fvcore_macs_per_image.notna().any() \
        else "cost_macs_per_image"
    models = list(dict.fromkeys(flops.model))
    fig, axes = _model_panels(models, 0.32, flops.groupby("model").size().max())
    for ax, m in zip(axes, models):
        d = flops[flops.model == m].dropna(subset=[col])
        y = np.arange(len(d))
        gm = d[col].to_numpy() / 1e9
        ax.barh(y, gm, color=[plt.cm.tab10(FAMILY_ORDER.index(f) % 10) if f in FAMILY_ORDER else "grey"
                              for f in d.family])
        for yi, x in zip(y, gm):
            ax.text(x, yi, f" {x:.3g}", va="center", fontsize=7)
        ax.set_yticks(y, d.tag, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.18 * gm.max() if len(gm) else 1)
        ax.set(xlabel=f"GMAC per generated image ({'fvcore' if col.startswith('fvcore') else 'cost model'})",
               title=m)
    fig.tight_layout()
    save(fig, path)


def speedup(flops: pd.DataFrame, times: pd.DataFrame, path, why="", level=0.95):
    """Per schedule: the cost model's ideal speed-up over DMI (bar) and the measured one with its
    interval over the timing repeats (the efficiency table's speedup_lo/speedup_hi)."""
    if times.empty or flops.empty or "measured_speedup" not in times:
        return _empty(path, "Speedup over DMI", why or "no timing results")
    d = times.dropna(subset=["measured_speedup"])
    d = d[d.tag != "dmi"].merge(flops[["model", "tag", "ideal_speedup"]], on=["model", "tag"], how="left")
    if d.empty:
        return _empty(path, "Speedup over DMI", "no DMI reference")
    models = list(dict.fromkeys(d.model))
    fig, axes = _model_panels(models, 0.45, d.groupby("model").size().max())
    for ax, m in zip(axes, models):
        g = d[d.model == m].reset_index(drop=True)
        y = np.arange(len(g))
        ax.barh(y - 0.2, g.ideal_speedup, height=0.38, color="tab:blue", alpha=0.45, label="cost model (ideal)")
        ax.barh(y + 0.2, g.measured_speedup, height=0.38, color="tab:orange", alpha=0.45, label="measured")
        hollow = False
        for i, r in g.iterrows():
            hollow |= not point_with_interval(ax, r.measured_speedup, i + 0.2, r.speedup_lo, r.speedup_hi, "k",
                                              horizontal=True, size=4)
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yticks(y, g.tag, fontsize=8)
        ax.invert_yaxis()
        lv = f"{float(level):.0%}"
        ax.set(xlabel="speed-up over DMI per generated image (x)",
               title=f"{m}: measured with its {lv} interval" + (" (hollow: no interval)" if hollow else ""))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.tight_layout()
    save(fig, path)


def active_tokens(curves: pd.DataFrame, eff_curves: pd.DataFrame, path, why=""):
    """Active patch tokens per iteration of every schedule (two panels a row; dashed: PRI's
    variants, so curves that coincide stay visible)."""
    frames = [c for c in (curves, eff_curves) if not c.empty]
    if not frames:
        return _empty(path, "Active tokens", why or "no schedules")
    d = pd.concat(frames)
    srcs = list(d.source.unique())
    cols = min(2, len(srcs))
    nrows = -(-len(srcs) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(7.2 * cols, 3.6 * nrows), squeeze=False)
    tags = list(dict.fromkeys(d.tag))
    colors = dict(zip(tags, plt.cm.tab20.colors * 2))
    for ax, s in zip(axes.flat, srcs):
        for tag, g in d[d.source == s].groupby("tag", sort=False):
            ax.plot(g.iteration, g.active_tokens, lw=1.4, color=colors[tag], label=tag, drawstyle="steps-post",
                    ls="--" if tag.startswith("pri") else "-")
        ax.set(title=s, xlabel="iteration", ylabel="active patch tokens")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    for ax in list(axes.flat)[len(srcs):]:
        ax.axis("off")
    fig.tight_layout()
    save(fig, path)


FOREST_WRAP = 46


def forest(claims: pd.DataFrame, path, why="", ids=None):
    """One panel per claim with numbers: each part's estimate with its interval, coloured by its
    verdict, and the part's region (the claims table's region_lo/region_hi) shaded on its row. A
    part with no interval (one seed: infinite) is a hollow marker labelled so; the axis spans the
    finite numbers only."""
    need = {"mean_difference", "region_lo", "region_hi"}
    d = claims[claims.mean_difference.notna()] if need <= set(claims) else claims.iloc[0:0]
    d = d[d.region_lo.notna() | d.region_hi.notna()] if not d.empty else d
    d = d[d.claim_id.isin(ids)] if ids is not None and not d.empty else d
    if d.empty:
        which = f"claims {', '.join(ids)}" if ids else "claims"
        return _empty(path, f"Differences and their intervals ({which})", why or "no part of these claims ran")
    cids = list(dict.fromkeys(d.claim_id))
    labels = {}
    for cid in cids:
        g = d[d.claim_id == cid]
        shared = g.scale.nunique() == 1
        for i, r in g.iterrows():
            labels[i] = _wrap(r.part if shared else f"{r.part}  ({r.scale.split(' (teacher')[0]})", FOREST_WRAP)
    units = [max(1.5, sum(1 + 0.6 * labels[i].count("\n") for i in d.index[d.claim_id == c])) for c in cids]
    fig, axes = plt.subplots(len(cids), 1, figsize=(10, 0.3 * sum(units) + 0.8 * len(cids) + 0.2), squeeze=False,
                             gridspec_kw={"height_ratios": units})
    for ax, cid in zip(axes[:, 0], cids):
        _forest_panel(ax, d[d.claim_id == cid], labels)
    fig.tight_layout(h_pad=0.6)
    save(fig, path)


def _bound(x, default):
    return float(x) if pd.notna(x) else default


def _forest_panel(ax, g, labels):
    finite = [float(x) for x in pd.concat([g.ci_lo, g.ci_hi, g.mean_difference, g.region_lo, g.region_hi])
              if _finite(x)]
    xmin, xmax = min(finite), max(finite)
    pad = 0.12 * (xmax - xmin or max(abs(xmax), 1.0))
    xmin, xmax = xmin - pad, xmax + pad
    r0 = g.iloc[0]
    if xmin < 0 < xmax and r0.unit in ("points", "(W1 of max-softmax)"):
        ax.axvline(0, color="k", lw=0.6)
    for i, r in enumerate(g.itertuples()):
        lo, hi = max(_bound(r.region_lo, -math.inf), xmin), min(_bound(r.region_hi, math.inf), xmax)
        if lo < hi:
            ax.fill_between([lo, hi], i - 0.42, i + 0.42, color="tab:green", alpha=0.14, lw=0)
        c = VERDICT_COLORS.get(r.verdict, "k")
        if not point_with_interval(ax, r.mean_difference, i, r.ci_lo, r.ci_hi, c, horizontal=True):
            n = "?" if pd.isna(r.n) else int(r.n)
            left = r.mean_difference > (xmin + xmax) / 2  # the note on the side with room
            ax.annotate(f"n={n}: {NO_INTERVAL}", (r.mean_difference, i), xytext=(-8 if left else 8, 0),
                        textcoords="offset points", va="center", ha="right" if left else "left", fontsize=7, color=c)
    ax.set_yticks(range(len(g)), [labels[i] for i in g.index], fontsize=7)
    ax.set_ylim(len(g) - 0.5, -0.5)
    ax.set_xlim(xmin, xmax)
    regions = " / ".join(dict.fromkeys(g.region))
    scale = f" At {g.scale.iloc[0].split(' (teacher')[0]}." if g.scale.nunique() == 1 else ""
    title = f"claim {r0.claim_id} ({r0.claim_verdict}): {r0.claim}. Region {regions} shaded (axis in {r0.unit}).{scale}"
    ax.set_title(_wrap(title, 115), fontsize=8, loc="left")
    ax.tick_params(axis="x", labelsize=7)


def update_counts(updates: pd.DataFrame, path, why=""):
    """Distribution of the optimisation steps a kept patch received, over T, per method and v
    (quartile boxes of the recorded counts, first seed)."""
    if updates.empty:
        return _empty(path, "Updates per kept patch", why or "no pools with update counts")
    order = list(dict.fromkeys(updates.sort_values(["family", "v"]).tag))
    fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(order)), 3.8))
    ax.boxplot([updates[updates.tag == t].updates_fraction.to_numpy() for t in order], flierprops={"ms": 1})
    ax.set_xticks(range(1, len(order) + 1), order, rotation=45, ha="right", fontsize=8)
    ax.set(xlabel="", ylabel="updates per kept patch / T", ylim=(0, 1.05))
    fig.tight_layout()
    save(fig, path)


def accuracy_vs_compute(compute: pd.DataFrame, path, why=""):
    """Each method's mean student top-1 with its interval over seeds at each compute budget (the
    compute table: iso-compute sweeps and the main sweep), against its mean measured inversion
    seconds per seed; a method's budgets joined in order of compute."""
    if compute.empty or not (compute.sweep != "main").any():
        return _empty(path, "Accuracy against inversion compute", why or "the iso-compute control is off")
    d = compute.dropna(subset=["seconds_mean"])
    ts = sorted(d.teacher.unique())
    fig, axes = plt.subplots(1, len(ts), figsize=(7.5 * len(ts), 4.4), squeeze=False)
    tags = list(dict.fromkeys(d.sort_values(["family", "tag"]).tag))
    colors = dict(zip(tags, plt.cm.tab10.colors * 3))
    for ax, t in zip(axes[0], ts):
        hollow = False
        for tag, g in d[d.teacher == t].groupby("tag", sort=False):
            g = g.sort_values("seconds_mean")
            ax.plot(g.seconds_mean, g.top1_mean, "-", color=colors[tag], lw=0.9, alpha=0.7)
            for i, r in enumerate(g.itertuples()):
                mk = "s" if r.sweep == "main" else "o"
                hollow |= not point_with_interval(ax, r.seconds_mean, r.top1_mean, r.top1_lo, r.top1_hi, colors[tag],
                                                  marker=mk, label=tag if i == 0 else None)
        _percent_axis(ax)
        ax.set(xscale="log", xlabel="inversion compute per seed (s, measured; mean over seeds)",
               ylabel="student top-1 (%)",
               title=f"teacher {t}: circles iso-compute budgets, squares the main sweep" +
                     ("\n(hollow: one seed, no interval)" if hollow else ""))
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.3g}"))
        ax.tick_params(axis="x", which="both", labelsize=8)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, title="method")
    fig.tight_layout()
    save(fig, path)


def quantization(qtable: pd.DataFrame, path, why=""):
    """Quantised top-1 per calibration pool and bit width: the quantisation table's mean with its
    interval over seeds (draws averaged within a seed), with the float, noise and real-image lines."""
    if qtable.empty or "source" not in qtable:
        return _empty(path, "Post-training quantisation", why or "quantisation is off")
    bits = sorted(qtable.bits.unique())
    base_src = {"noise": "tab:red", "real": "tab:green"}
    fig, axes = plt.subplots(1, len(bits), figsize=(6.5 * len(bits), 4.0), squeeze=False)
    for ax, b in zip(axes[0], bits):
        q = qtable[qtable.bits == b]
        pools = q[~q.source.isin(base_src)].reset_index(drop=True)
        hollow = False
        for i, r in pools.iterrows():
            hollow |= not point_with_interval(ax, i, r.top1_mean, r.top1_lo, r.top1_hi, "tab:blue")
        for src, color in base_src.items():
            s = q[q.source == src]
            if len(s):
                ax.axhline(s.top1_mean.iloc[0], color=color, ls="--", lw=1, label=f"{src} calibration")
        fp = q.fp_top1.dropna() if "fp_top1" in q else []
        if len(fp):
            ax.axhline(fp.iloc[0], color="k", ls=":", lw=1, label="float")
        ax.set_xticks(range(len(pools)), pools.source, rotation=45, ha="right", fontsize=8)
        ax.set(title=f"{b}" + (" (hollow: one seed, no interval)" if hollow else ""), xlabel="calibration pool",
               ylabel="quantised teacher top-1 (%)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.tight_layout()
    save(fig, path)
