"""The one verdict rule, on constructed data: an interval inside, outside and across a claim's
region gives each verdict; more noise never turns a verdict into "supported"."""
import math

import numpy as np
import pytest
from scipy import stats as st

from analysis.stats import (INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED, Region, above, at_least, combine,
                            hierarchical_bootstrap, log_ratio_interval, t_interval, verdict, within)


@pytest.mark.parametrize("region,interval,expected", [
    (at_least(-3), (-2.0, 4.0), SUPPORTED),
    (at_least(-3), (-9.0, -4.0), NOT_SUPPORTED),
    (at_least(-3), (-5.0, 1.0), INCONCLUSIVE),
    (above(0), (0.5, 2.0), SUPPORTED),
    (above(0), (-1.0, 0.0), NOT_SUPPORTED),  # 0 itself is outside an open region
    (above(0), (0.0, 1.0), INCONCLUSIVE),
    (within(-3, 3), (-1.0, 2.5), SUPPORTED),
    (within(-3, 3), (3.5, 7.0), NOT_SUPPORTED),
    (within(-3, 3), (-4.0, 4.0), INCONCLUSIVE),  # covers the region and more
    (within(6, 19), (7.0, 12.0), SUPPORTED),
    (within(6, 19), (-2.0, 3.0), NOT_SUPPORTED),
    (within(0.07, 0.87), (-0.1, 0.2), INCONCLUSIVE),
])
def test_inside_outside_across(region, interval, expected):
    assert verdict(*interval, region) == expected


def test_unknown_or_infinite_intervals_are_inconclusive():
    assert verdict(-math.inf, math.inf, at_least(-3)) == INCONCLUSIVE
    assert verdict(math.nan, math.nan, at_least(-3)) == INCONCLUSIVE
    assert verdict(None, None, within(-1, 1)) == INCONCLUSIVE


def test_more_noise_never_makes_a_claim_supported():
    """Widening an interval (more noise, fewer seeds) can only move a verdict towards inconclusive."""
    rng = np.random.default_rng(0)
    regions = [at_least(-3), above(0), within(-3, 3), within(6, 19), Region(hi=1.0, hi_open=True)]
    changed = 0
    for _ in range(4000):
        region = regions[rng.integers(len(regions))]
        c, h = rng.normal(0, 8), rng.exponential(3)
        narrow = verdict(c - h, c + h, region)
        for grow in (1.5, 3.0, 10.0):
            wide = verdict(c - grow * h, c + grow * h, region)
            assert wide in (narrow, INCONCLUSIVE), (region, c, h, grow, narrow, wide)
            assert not (wide == SUPPORTED and narrow != SUPPORTED)
            changed += wide != narrow
    assert changed > 100  # the property was exercised, not vacuous


def test_noisier_equivalence_is_not_easier_to_support():
    """The old rule called 'PRI about DMI' supported whenever the difference hid in the noise; now a
    noisy difference of 5.8 points with 2 seeds is inconclusive, a precise one of 1 point supported."""
    noisy = t_interval([-14.5, 2.9], 0.95)
    assert verdict(noisy.lo, noisy.hi, within(-3, 3)) == INCONCLUSIVE
    precise = t_interval([0.8, 1.2, 0.9, 1.1, 1.0], 0.95)
    assert verdict(precise.lo, precise.hi, within(-3, 3)) == SUPPORTED


def test_t_interval_is_students():
    d = [1.0, 2.5, -0.5, 3.0, 1.5]
    iv = t_interval(d, 0.95)
    lo, hi = st.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=st.sem(d))
    assert iv.lo == pytest.approx(lo) and iv.hi == pytest.approx(hi) and iv.n == 5
    assert iv.half_width == pytest.approx((hi - lo) / 2) and iv.sd == pytest.approx(np.std(d, ddof=1))
    one = t_interval([2.0], 0.95)
    assert one.n == 1 and math.isinf(one.lo) and math.isinf(one.hi)
    assert t_interval([], 0.95).n == 0
    assert t_interval(d, 0.99).half_width > iv.half_width


def test_log_ratio_interval_is_welchs_on_log_times():
    """A ratio of times: Welch's t on the logs (the textbook formula), at the level asked for; no
    spread gives the point, one sample a side no interval."""
    a, b = [0.8, 0.81, 0.79, 0.82], [10.0, 10.4, 9.7]
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / len(a), lb.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    for level in (0.9, 0.95, 0.99):
        h = st.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
        est, lo, hi = log_ratio_interval(a, b, level)
        assert est == pytest.approx(math.exp(la.mean() - lb.mean()))
        assert (lo, hi) == pytest.approx((math.exp(la.mean() - lb.mean() - h), math.exp(la.mean() - lb.mean() + h)))
    assert log_ratio_interval([2.0, 2.0], [1.0, 1.0], 0.95) == (2.0, 2.0, 2.0)
    assert all(math.isnan(x) for x in log_ratio_interval([2.0], [1.0, 1.1], 0.95)[1:])


def test_hierarchical_bootstrap_covers_a_known_difference_and_is_deterministic():
    rng = np.random.default_rng(1)
    groups = [(rng.normal(0.0, 1, 200), rng.normal(1.0, 1, 200)) for _ in range(4)]
    stat = lambda a, b: b.mean() - a.mean()  # noqa: E731
    iv = hierarchical_bootstrap(groups, stat, reps=400, seed=0)
    assert iv.lo < 1.0 < iv.hi and iv.hi - iv.lo < 0.6 and iv.n == 4
    again = hierarchical_bootstrap(groups, stat, reps=400, seed=0)
    assert (again.lo, again.hi) == (iv.lo, iv.hi)


def test_combine_parts():
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE]) == NOT_SUPPORTED
    assert combine([NOT_RUN]) == NOT_RUN and combine([]) == NOT_RUN


def test_region_text():
    assert at_least(-3).text() == "[-3, +inf)"
    assert above(0).text("x") == "(0, +inf) x"
    assert within(6, 19).text() == "[+6, +19]"


def test_part_verdict_and_not_testable_parts():
    from analysis.stats import NOT_TESTABLE, part_verdict

    r = above(0.0)
    assert part_verdict(0.5, 2.0, 0.1, 2.4, r) == SUPPORTED
    assert part_verdict(-3.0, -0.5, -3.5, 0.2, r) == INCONCLUSIVE  # only the narrow interval misses
    assert part_verdict(-3.0, -0.5, -3.5, -0.1, r) == NOT_SUPPORTED
    assert combine([NOT_TESTABLE, SUPPORTED]) == SUPPORTED and combine([NOT_TESTABLE]) == NOT_TESTABLE
    assert combine([NOT_TESTABLE, NOT_RUN]) == NOT_TESTABLE
