"""Claim verdicts from tidy tables: the rules decide as documented, never without numbers."""
import pandas as pd
import pytest

from analysis import claims as C
from analysis.collect import describe

TEACHERS = pd.DataFrame([{"teacher": "t", "model": "vit", "dataset": "fashion_mnist", "top1_pct": 90.0}])


def _acc(values: dict) -> pd.DataFrame:
    """values: tag -> list of top-1 (one per seed)."""
    rows = []
    for tag, tops in values.items():
        d = describe(tag)
        family = d["family"]
        for seed, top in enumerate(tops):
            rows.append({"teacher": "t", "tag": tag, "seed": seed, **d, "top1_pct": top,
                         "confidence_distance": {"DMI": 0.3, "SMI (default)": 0.2, "SMI (matched)": 0.25,
                                                 "PRI": 0.1, "PRI (random)": 0.12}[family]})
    return pd.DataFrame(rows)


def _verdict(rows, cid):
    (row,) = [r for r in rows if r["claim_id"] == cid]
    return row["verdict"], row


@pytest.mark.parametrize("pri,smi,expected", [
    ([60, 62], [50, 52], "supported"),
    ([40, 41], [60, 61], "not supported"),
    ([55, 56], [55.5, 56.5], "inconclusive"),
])
def test_pri_vs_smi_at_matched_sparsity(pri, smi, expected):
    rows = C.accuracy_claims(_acc({"dmi": [60, 61], "pri_v4": pri, "smi_v4": smi}), TEACHERS, {}, [])
    verdict, row = _verdict(rows, "3a")
    assert verdict == expected and "v=4" in row["our_value"]


def test_dmi_ahead_at_v7_and_rebirth():
    rows = C.accuracy_claims(_acc({"dmi": [70, 71], "pri_v7": [60, 61], "pri_random_v7": [60.5, 60],
                                   "smi_v7": [50, 50]}), TEACHERS, {}, [])
    assert _verdict(rows, "3c")[0] == "supported"
    assert _verdict(rows, "5")[0] == "supported"
    assert _verdict(rows, "3b")[0] == "not supported"  # 10 points below DMI is not "matching"
    assert _verdict(rows, "7")[0] == "supported"  # PRI has the smallest confidence distance


def test_without_an_accuracy_track_every_claim_says_why():
    missing = [{"teacher": "t", "key": "teachers.t.data_root", "reason": "not found"}]
    rows = C.accuracy_claims(pd.DataFrame(), pd.DataFrame(), {}, missing)
    for cid in ("3a", "3b", "5", "7"):
        verdict, row = _verdict(rows, cid)
        assert verdict == "not run" and "teachers.t.data_root" in row["our_value"]


def test_efficiency_claims():
    tags = {"dmi": 100.0, "smi_default": 30.0, "smi_v4": 40.0, "pri_v4": 15.0, "pri_v7": 8.0}
    flops = pd.DataFrame([{"model": "m", "tag": t, **describe(t), "fvcore_macs_per_image": x * 1e9,
                           "cost_macs_per_image": x * 1e9} for t, x in tags.items()])
    times = pd.DataFrame([{"model": "m", "tag": t, **describe(t), "seconds_per_image": x / 10, "mode": "stage-sampled",
                           "device": "cpu", "iterations": 4000, "batch": 8} for t, x in tags.items()])
    theorem = pd.DataFrame([{"model": "m", "v": 4, "part": "mlp", "ratio": 0.62, "predicted": "<", "holds": True}])
    rows = C.efficiency_claims(flops, times, theorem, {}, enabled=True)
    assert _verdict(rows, "1")[0] == "supported"  # 12.5x vs DMI, 3.75x vs SMI
    assert _verdict(rows, "2a")[0] == "supported"
    assert _verdict(rows, "2b")[0] == "not run"  # CPU only: no GPU memory
    assert _verdict(rows, "8")[0] == "supported"
    slow = times.assign(seconds_per_image=[10.0, 3.0, 4.0, 2.0, 1.5])
    assert _verdict(C.efficiency_claims(flops, slow, theorem, {}, enabled=True), "1")[0] == "not supported"
    bad = flops.copy()
    bad.loc[bad.tag == "pri_v4", "fvcore_macs_per_image"] = 50e9  # PRI above its matched SMI
    assert _verdict(C.efficiency_claims(bad, times, theorem, {}, enabled=True), "2a")[0] == "not supported"
