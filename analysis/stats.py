"""The one rule by which every claim gets its verdict, and the intervals it reads.

A claim is a region of the true difference (``PRI - SMI >= -delta``, ``random - attention in
[-delta, +delta]``, ``PRI - SMI in [6, 19]``, ...). From the data, an interval of the difference at
a stated level: inside the region -> supported; disjoint from it -> not supported; otherwise
inconclusive. A wider interval (more noise, fewer seeds) can therefore only move a verdict
towards inconclusive, never make it supported. delta comes from the config, fixed before a run.

Intervals: per-seed paired differences give a t-interval (seed s gives every method the same
labels, student initialisation and data order); a statistic of per-image data (the Wasserstein
distance of teacher confidences to real data) is computed once per seed and the per-seed
differences take the same t-interval. Accuracies measured on one shared test set (quantisation)
take a crossed interval: seeds (or calibration draws) and test images are both samples, so the
standard error adds both components (``crossed_t_interval``).

A claim of k parts ("at every v"): supported when every part's interval at the level lies inside
its region (an intersection-union test needs no correction); not supported when some part's
interval at 1 - alpha/k (Bonferroni) is disjoint from it, so k parts on their boundaries give a
false "not supported" at most alpha/2 in all, as one part does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = "supported", "not supported", "inconclusive", "not run"
NOT_TESTABLE = "not testable here"  # the assay failed its positive control: it cannot decide the claim
CONTROL_PASSED, CONTROL_FAILED = "control passed", "control failed"  # the rows of an assay's positive control
CLAIM_VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN, NOT_TESTABLE)
VERDICTS = CLAIM_VERDICTS + (CONTROL_PASSED, CONTROL_FAILED)  # every value claims.csv's verdict column takes
LEVEL = 0.95


@dataclass(frozen=True)
class Region:
    """An interval of the real line; ``lo``/``hi`` may be infinite, each end open or closed."""
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, x: float) -> bool:
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def contains_interval(self, lo: float, hi: float) -> bool:
        return self.contains(lo) and self.contains(hi)

    def disjoint(self, lo: float, hi: float) -> bool:
        """No point of [lo, hi] lies in the region."""
        if hi < self.lo or (hi == self.lo and self.lo_open):
            return True
        return lo > self.hi or (lo == self.hi and self.hi_open)

    def text(self, unit: str = "") -> str:
        def num(v):
            return ("-inf" if v < 0 else "+inf") if math.isinf(v) else "0" if v == 0 else f"{v:+g}"

        left = "(" if self.lo_open or math.isinf(self.lo) else "["
        right = ")" if self.hi_open or math.isinf(self.hi) else "]"
        return f"{left}{num(self.lo)}, {num(self.hi)}{right}{(' ' + unit) if unit else ''}"


def at_least(x: float) -> Region:
    return Region(lo=x)


def above(x: float) -> Region:
    return Region(lo=x, lo_open=True)


def within(lo: float, hi: float) -> Region:
    return Region(lo=lo, hi=hi)


def verdict(lo: float, hi: float, region: Region) -> str:
    """supported if [lo, hi] lies inside ``region``, not supported if it lies entirely outside,
    inconclusive otherwise (an unknown or infinite interval is inconclusive)."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if region.contains_interval(lo, hi):
        return SUPPORTED
    if region.disjoint(lo, hi):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def part_verdict(lo: float, hi: float, lo_k: float, hi_k: float, region: Region) -> str:
    """One part of a claim of k parts: supported if its interval at the level ([lo, hi]) lies
    inside ``region``; not supported if its interval at 1 - alpha/k ([lo_k, hi_k], the wider one)
    is disjoint from it; inconclusive otherwise."""
    if verdict(lo, hi, region) == SUPPORTED:
        return SUPPORTED
    return NOT_SUPPORTED if verdict(lo_k, hi_k, region) == NOT_SUPPORTED else INCONCLUSIVE


def combine(verdicts) -> str:
    """A claim made of several comparisons (e.g. 'at every v'): supported when every part is,
    not supported when any part is (each part judged by ``part_verdict``), inconclusive
    otherwise; parts whose assay failed its control (not testable here) leave the claim to the
    others, and a claim with only such parts is not testable here."""
    v = [x for x in verdicts if x != NOT_RUN]
    if not v:
        return NOT_RUN
    if all(x == NOT_TESTABLE for x in v):
        return NOT_TESTABLE
    v = [x for x in v if x != NOT_TESTABLE]
    if NOT_SUPPORTED in v:
        return NOT_SUPPORTED
    return SUPPORTED if all(x == SUPPORTED for x in v) else INCONCLUSIVE


@dataclass
class Interval:
    estimate: float
    lo: float
    hi: float
    n: int
    level: float
    method: str
    sd: float = math.nan
    se: float = math.nan
    df: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def t_interval(diffs, level: float = LEVEL) -> Interval:
    """Mean of paired differences with its Student-t interval (scipy's one-sample t test); fewer
    than two: an infinite interval."""
    from scipy import stats

    d = np.asarray([x for x in diffs if x is not None and not math.isnan(x)], dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level, "t (paired by seed)")
    mean = float(d.mean())
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n, level, "t (paired by seed)")
    sd = float(d.std(ddof=1))
    if sd == 0:  # every difference the same: the interval is the point (scipy returns NaN)
        return Interval(mean, mean, mean, n, level, "t (paired by seed)", 0.0, 0.0, n - 1)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(level)
    return Interval(mean, float(ci.low), float(ci.high), n, level, "t (paired by seed)", sd, sd / math.sqrt(n), n - 1)


def log_ratio_interval(a, b, level: float = LEVEL) -> tuple[float, float, float]:
    """exp(mean log a - mean log b), a ratio of times, with its interval at ``level`` from Welch's t
    on the logs (scipy's ttest_ind with unequal variances); fewer than two samples on a side: NaN
    ends; no spread: the point itself."""
    from scipy import stats

    la, lb = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    est = float(np.exp(la.mean() - lb.mean()))
    if len(la) < 2 or len(lb) < 2:
        return est, math.nan, math.nan
    if la.var(ddof=1) + lb.var(ddof=1) == 0:
        return est, est, est
    ci = stats.ttest_ind(la, lb, equal_var=False).confidence_interval(level)
    return est, float(math.exp(ci.low)), float(math.exp(ci.high))


def at_level(mean: float, se: float, df: float, level: float) -> tuple[float, float]:
    """The t-interval of an estimate with standard error ``se`` and ``df`` degrees of freedom at
    ``level`` (an unknown se or df: NaN; a zero se: the point itself)."""
    from scipy import stats

    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (mean, se, df)):
        return math.nan, math.nan
    if se == 0:
        return mean, mean
    h = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return mean - h, mean + h


def bonferroni(level: float, k: int) -> float:
    """The level of each of k intervals that together hold at ``level``: 1 - alpha/k."""
    return 1.0 - (1.0 - level) / max(1, int(k))


def crossed_t_interval(a, b, level: float = LEVEL, unit: str = "seed") -> Interval:
    """Interval of mean(a) - mean(b) for 0/1 (or any) scores on one shared set of test images:
    ``a`` and ``b`` are arrays [units, images] (units: seeds or calibration draws; the same images,
    in the same order, in every row). With a's and b's unit means paired when both have the same
    units (paired by seed), the difference's standard error adds the spread over units and the
    spread over images (a crossed design: se^2 = s_units^2 / n + s_images^2 / M, which counts the
    interaction twice, so it errs wide), with Welch-Satterthwaite degrees of freedom. ``a`` and
    ``b`` of different units (independent calibration draws) add the two unit spreads instead."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.size == 0 or b.size == 0 or a.shape[1] != b.shape[1]:
        return Interval(math.nan, math.nan, math.nan, 0, level, f"t over {unit}s and images")
    m, paired = a.shape[1], a.shape[0] == b.shape[0] and unit == "seed"
    est = float(a.mean() - b.mean())
    per_image = a.mean(0) - b.mean(0)
    parts = [(per_image.var(ddof=1) / m, m - 1)] if m > 1 else []
    if paired:
        parts.append(((a.mean(1) - b.mean(1)).var(ddof=1) / a.shape[0], a.shape[0] - 1) if a.shape[0] > 1 else None)
    else:
        parts += [(x.mean(1).var(ddof=1) / x.shape[0], x.shape[0] - 1) if x.shape[0] > 1 else None for x in (a, b)]
    n = min(a.shape[0], b.shape[0])
    how = f"t over {unit}s and test images (crossed: {n} {unit}s x {m} images)"
    if any(p is None for p in parts):
        return Interval(est, -math.inf, math.inf, n, level, how)
    var = sum(v for v, _ in parts)
    df = var ** 2 / sum(v ** 2 / d for v, d in parts if v > 0) if var > 0 else math.inf
    lo, hi = at_level(est, math.sqrt(var), df, level)
    return Interval(est, lo, hi, n, level, how, math.nan, math.sqrt(var), df)


def hierarchical_bootstrap(groups, stat, level: float = LEVEL, reps: int = 2000, seed: int = 0) -> Interval:
    """Percentile interval of ``mean over groups of stat(group)``, resampling the groups and,
    within each, the rows of every array the group holds (independently per array). No claim uses
    it any more: with three seeds it covered 0.79-0.93 where claim 7 used it (the per-seed t does
    not undercover), and it treats a PRI trajectory's v images as independent.

    ``groups``: a list (one per seed) of tuples of 1-D arrays; ``stat(*arrays) -> float``."""
    rng = np.random.default_rng(seed)
    groups = [tuple(np.asarray(a, dtype=np.float64) for a in g) for g in groups]
    est = float(np.mean([stat(*g) for g in groups])) if groups else math.nan
    if len(groups) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level, "bootstrap")
    vals = np.empty(reps)
    for r in range(reps):
        pick = rng.integers(0, len(groups), len(groups))
        vals[r] = np.mean([stat(*(a[rng.integers(0, len(a), len(a))] for a in groups[i])) for i in pick])
    lo, hi = np.quantile(vals, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(est, float(lo), float(hi), len(groups), level,
                    f"bootstrap ({reps} resamples of seeds, then images within each)")


def group_intervals(df, keys, value: str, level: float = LEVEL, unit: str = "seed"):
    """Per group of ``keys``: the mean of ``value`` over ``unit`` (values of a unit averaged first,
    e.g. calibration draws within a seed) with its Student-t interval (infinite for one unit).
    The intervals a plot draws come from here, never from the plotting library."""
    import pandas as pd

    rows = []
    if df.empty:
        return pd.DataFrame(columns=[*keys, "mean", "lo", "hi", "n"])
    for k, g in df.groupby(keys, dropna=False, sort=False):
        per_unit = g.groupby(unit)[value].mean() if unit in g and g[unit].notna().any() else g[value]
        iv = t_interval(per_unit.tolist(), level)
        rows.append({**dict(zip(keys, k if isinstance(k, tuple) else (k,))), "mean": iv.estimate, "lo": iv.lo,
                     "hi": iv.hi, "n": iv.n, "level": level})
    return pd.DataFrame(rows)
