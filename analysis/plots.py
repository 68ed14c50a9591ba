"""Plots for report.html (matplotlib Agg + seaborn). A plot with no data says why."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pri.io import atomic_path  # noqa: E402
from pri.schedules import REGISTRY  # noqa: E402

FAMILY_ORDER = [m.family for m in REGISTRY.values()]


def save(fig, path, dpi=110, **kw) -> None:
    """Write a figure under a temporary name and rename it: a half-written PNG never has the final name."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **kw)
    plt.close(fig)


def _empty(path, title, why):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}\n\nnot run: {why}", ha="center", va="center", wrap=True)
    save(fig, path, dpi=100, bbox_inches="tight")


def accuracy_vs_sparsity(acc: pd.DataFrame, pools: pd.DataFrame, teachers: pd.DataFrame, path, why=""):
    if acc.empty:
        return _empty(path, "Accuracy vs sparsity", why or "no distillation results")
    df = acc[acc.sweep == "main"]
    ts = sorted(df.teacher.unique())
    fig, axes = plt.subplots(1, len(ts), figsize=(6.5 * len(ts), 4.5), squeeze=False)
    for ax, t in zip(axes[0], ts):
        d = df[df.teacher == t]
        hue_order = [f for f in FAMILY_ORDER if f in set(d.family)]
        sns.lineplot(data=d, x="sparsity_pct", y="top1_pct", hue="family", hue_order=hue_order, style="family",
                     markers=True, dashes=False, err_style="bars", errorbar="sd", ax=ax)
        row = teachers[teachers.teacher == t]
        if not row.empty and pd.notna(row.iloc[0]["top1_pct"]):
            ax.axhline(row.iloc[0]["top1_pct"], ls="--", c="grey", lw=1, label="teacher")
        nc = pools[pools.teacher == t]["num_classes"].dropna() if not pools.empty else pd.Series(dtype=float)
        if len(nc):
            ax.axhline(100.0 / float(nc.iloc[0]), ls=":", c="red", lw=1, label="chance")
        ax.set(xlabel="patches removed per synthetic image (%)", ylabel="student top-1 (%)", title=f"teacher {t}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def _to_rgb(img):
    x = img.float() / 255.0
    if x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    return x.permute(1, 2, 0).numpy()


def synthetic_grid(first: dict, path, per_method=8, why=""):
    if not first:
        return _empty(path, "Synthetic images", why or "no pools")
    teacher = sorted(first)[0]
    pools = first[teacher]
    tags = list(pools)
    fig, axes = plt.subplots(len(tags), per_method, figsize=(1.2 * per_method, 1.3 * len(tags)), squeeze=False)
    for r, tag in enumerate(tags):
        p = pools[tag]["pool"]
        order = np.argsort(p["labels"].numpy(), kind="stable")
        pick = [order[i] for i in np.linspace(0, len(order) - 1, per_method).astype(int)]
        for c, i in enumerate(pick):
            ax = axes[r][c]
            ax.imshow(_to_rgb(p["images"][i]), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(tag, rotation=0, ha="right", va="center", fontsize=8)
            ax.set_title(f"y={int(p['labels'][i])}", fontsize=6)
    fig.suptitle(f"teacher {teacher}, first seed", fontsize=9)
    fig.tight_layout()
    save(fig, path)


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


def flops_bars(flops: pd.DataFrame, path, why=""):
    if flops.empty:
        return _empty(path, "MACs per generated image", why or "no efficiency results")
    col = "fvcore_macs_per_image" if "fvcore_macs_per_image" in flops else "cost_macs_per_image"
    d = flops.assign(gmac=flops[col] / 1e9)
    g = sns.catplot(data=d, x="tag", y="gmac", col="model", kind="bar", sharey=False, height=3.5, aspect=1.3)
    _save_grid(g, "GMAC per generated image (inversion)", path)


def _save_grid(g, ylabel, path):
    g.set_axis_labels("", ylabel)
    for ax in g.axes.flat:
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    save(g.figure, path)


def speedup(flops: pd.DataFrame, times: pd.DataFrame, path, why=""):
    if times.empty or flops.empty or "measured_speedup" not in times:
        return _empty(path, "Speedup over DMI", why or "no timing results")
    d = pd.concat([times.assign(kind="measured", speedup=times["measured_speedup"]),
                   flops.assign(kind="cost model", speedup=flops["ideal_speedup"])])
    d = d.dropna(subset=["speedup"])
    d = d[d.tag.isin(set(times.tag))]
    if d.empty:
        return _empty(path, "Speedup over DMI", "no DMI reference")
    g = sns.catplot(data=d, x="tag", y="speedup", hue="kind", col="model", kind="bar", height=3.5, aspect=1.3)
    _save_grid(g, "speedup over DMI per image", path)


def active_tokens(curves: pd.DataFrame, eff_curves: pd.DataFrame, path, why=""):
    frames = [c for c in (curves, eff_curves) if not c.empty]
    if not frames:
        return _empty(path, "Active tokens", why or "no schedules")
    d = pd.concat(frames)
    srcs = list(d.source.unique())
    fig, axes = plt.subplots(1, len(srcs), figsize=(6 * len(srcs), 3.8), squeeze=False)
    for ax, s in zip(axes[0], srcs):
        sns.lineplot(data=d[d.source == s], x="iteration", y="active_tokens", hue="tag", ax=ax, lw=1.2)
        ax.set(title=s, ylabel="active patch tokens")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def forest(claims: pd.DataFrame, path, why=""):
    """One panel per accuracy claim: each difference with its interval, the claim's region shaded."""
    import math

    d = claims[claims.ci_lo.notna() & claims.claim_id.isin(["3a", "3b", "3c", "4a", "4b", "5", "6", "7", "9"])]
    if d.empty:
        return _empty(path, "Differences and their intervals", why or "no paired differences")
    cids = list(dict.fromkeys(d.claim_id))
    fig, axes = plt.subplots(len(cids), 1, figsize=(8, 1.1 + 0.45 * len(d)), squeeze=False,
                             gridspec_kw={"height_ratios": [max(1, (d.claim_id == c).sum()) for c in cids]})
    colors = {"supported": "tab:green", "not supported": "tab:red", "inconclusive": "tab:grey"}
    for ax, cid in zip(axes[:, 0], cids):
        g = d[d.claim_id == cid].reset_index(drop=True)
        lo = [x if math.isfinite(x) else np.nan for x in g.ci_lo]
        hi = [x if math.isfinite(x) else np.nan for x in g.ci_hi]
        span = [x for x in lo + hi + list(g.mean_difference) if x is not None and np.isfinite(x)]
        xmin, xmax = (min(span), max(span)) if span else (-1, 1)
        pad = 0.15 * (xmax - xmin or 1)
        xmin, xmax = xmin - pad, xmax + pad
        region = g.region.iloc[0]
        rlo, rhi = _region_bounds(region)
        ax.axvspan(max(rlo, xmin), min(rhi, xmax), color="tab:green", alpha=0.12, lw=0)
        ax.axvline(0, color="k", lw=0.6)
        for i, r in g.iterrows():
            c = colors.get(r.verdict, "k")
            ax.plot([r.ci_lo if np.isfinite(r.ci_lo) else xmin, r.ci_hi if np.isfinite(r.ci_hi) else xmax], [i, i],
                    color=c, lw=2)
            ax.plot([r.mean_difference], [i], "o", color=c)
        ax.set_yticks(range(len(g)))
        ax.set_yticklabels([f"{p}  ({s.split(' (teacher')[0][:28]})" for p, s in zip(g.part, g.scale)], fontsize=7)
        ax.set_xlim(xmin, xmax)
        ax.invert_yaxis()
        ax.set_title(f"claim {cid}: region {region} (shaded); verdict {g.claim_verdict.iloc[0]}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    save(fig, path)


def _region_bounds(text: str):
    """(lo, hi) of a region written by stats.Region.text ("[-3, +inf) points")."""
    inner = text.split("]")[0].split(")")[0].lstrip("[(")
    lo, hi = (s.strip().split()[0] for s in inner.split(","))
    conv = lambda s: float(s.replace("+inf", "inf"))  # noqa: E731
    return conv(lo), conv(hi)


def update_counts(updates: pd.DataFrame, path, why=""):
    """Distribution of the optimisation steps a kept patch received, over T, per method and v."""
    if updates.empty:
        return _empty(path, "Updates per kept patch", why or "no pools with update counts")
    order = list(dict.fromkeys(updates.sort_values(["family", "v"]).tag))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(order)), 3.8))
    sns.boxplot(data=updates, x="tag", y="updates_fraction", order=order, ax=ax, fliersize=1, color="tab:blue")
    ax.set(xlabel="", ylabel="updates per kept patch / T", ylim=(0, 1.05))
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    fig.tight_layout()
    save(fig, path)


def accuracy_vs_compute(iso: pd.DataFrame, path, why=""):
    """Student top-1 against inversion compute (measured seconds per seed), per method, with seed spread."""
    if iso.empty or not (iso.sweep != "main").any():
        return _empty(path, "Accuracy against inversion compute", why or "the iso-compute control is off")
    d = iso.dropna(subset=["inversion_seconds"])
    fig, axes = plt.subplots(1, d.teacher.nunique(), figsize=(6.5 * d.teacher.nunique(), 4.2), squeeze=False)
    for ax, (t, g) in zip(axes[0], d.groupby("teacher")):
        sns.lineplot(data=g, x="inversion_seconds", y="top1_pct", hue="tag", style="sweep", markers=True,
                     err_style="bars", errorbar=("ci", 95), ax=ax)
        ax.set(xscale="log", xlabel="inversion compute per seed (s, measured)", ylabel="student top-1 (%)",
               title=f"teacher {t}: equal-compute sweeps (iso) and the main sweep")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def quantization(quant: pd.DataFrame, path, why=""):
    """Quantised top-1 per calibration source and bit width, seeds and draws as points, with the
    float, noise and real-image lines."""
    if quant.empty:
        return _empty(path, "Post-training quantisation", why or "quantisation is off")
    q = quant.assign(source=quant.tag.fillna(quant.calibration))
    pools = q[q.tag.notna()]
    bits = sorted(q.bits.unique())
    fig, axes = plt.subplots(1, len(bits), figsize=(6 * len(bits), 3.8), squeeze=False)
    for ax, b in zip(axes[0], bits):
        g = pools[pools.bits == b]
        if not g.empty:
            sns.pointplot(data=g, x="tag", y="top1_pct", errorbar="sd", linestyle="none", ax=ax, color="tab:blue")
        base = q[(q.bits == b) & q.tag.isna()]
        for src, color in (("noise", "tab:red"), ("real", "tab:green")):
            s = base[base.calibration == src]["top1_pct"]
            if len(s):
                ax.axhline(s.mean(), color=color, ls="--", lw=1, label=f"{src} calibration")
        fp = q[q.bits == b]["fp_top1_pct"].dropna()
        if len(fp):
            ax.axhline(fp.iloc[0], color="k", ls=":", lw=1, label="float")
        ax.set(title=b, xlabel="", ylabel="quantised teacher top-1 (%)")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
