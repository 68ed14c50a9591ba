"""The variance report: students' own noise against the pools', from runs with several students per pool."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis import collect


def _rows(sd_students, sd_pools, pools=40, k=3, seed=0, arm=collect.ARM_PROBE):
    rng = np.random.default_rng(seed)
    rows = []
    for tag in ("pri_v4", "smi_v4"):
        for p in range(pools):
            mu = 50 + rng.normal(0, sd_pools)
            tops = list(mu + rng.normal(0, sd_students, k))
            rows.append({"teacher": "t", "sweep": "main", "tag": tag, "seed": p, "arm": arm,
                         "top1_runs": json.dumps(tops), "scratch_top1_runs": json.dumps(tops[:1])})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("sd_students,sd_pools", [(3.0, 3.0), (0.1, 2.0)])
def test_components_recover_planted_sds(sd_students, sd_pools):
    t = collect.variance_table(_rows(sd_students, sd_pools))
    allrow = t[(t.arm == "verdict student") & (t.tag.str.startswith("all"))].iloc[0]
    assert allrow.sd_students == pytest.approx(sd_students, rel=0.2)
    assert allrow.sd_pools == pytest.approx(sd_pools, rel=0.35, abs=0.5)
    share = sd_students ** 2 / (sd_students ** 2 + sd_pools ** 2)
    assert allrow.students_share == pytest.approx(share, abs=0.1)
    assert allrow.pools == 80 and allrow.students_per_pool == 3


def test_no_report_from_one_student_per_pool():
    t = collect.variance_table(_rows(1.0, 1.0, k=1))
    assert t.empty  # one head per pool and one from-scratch student: nothing to separate
