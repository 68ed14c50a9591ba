"""The analytic cost model: docs/methods.md's ideal ratios, Theorem 1 and the counts per schedule."""
from __future__ import annotations

import math

import pytest

from pri.measure.cost import (GROUPS, ModelDims, dims_of, forward_macs, ideal_ratios, schedule_cost, schedule_profile,
    standard_schedules, step_macs, theorem1)
from pri.core.schedules import DMI, PRI, SMI, IdealSMI, Spec, build
from pri.errors import PriError

DEITS = {"deit_tiny_patch16_224": 192, "deit_small_patch16_224": 384, "deit_base_patch16_224": 768}


@pytest.fixture(scope="module")
def dims():
    return {name: dims_of(name) for name in DEITS}


def synthetic(n: int, d: int, depth: int = 12) -> ModelDims:
    return ModelDims(name=f"N{n}_D{d}", num_patches=n, prefix=1, embed_dim=d, depth=depth, num_heads=max(1, d // 64),
                     attn_dim=d, mlp_hidden=4 * d, in_chans=3, patch=16, num_classes=1000)


def test_dims_of_deits(dims):
    for name, D in DEITS.items():
        d = dims[name]
        assert (d.num_patches, d.embed_dim, d.depth, d.prefix, d.mlp_hidden, d.attn_dim) == (196, D, 12, 1, 4 * D, D)
    assert [round(dims[n].n_over_d, 2) for n in DEITS] == [1.02, 0.51, 0.26]


def test_block_formula(dims):
    """Block at n+1 tokens: 12 (n+1) D^2 + 2 (n+1)^2 D (docs/methods.md), split into its groups."""
    d = dims["deit_base_patch16_224"]
    for n in (196, 98, 49, 28, 1):
        f = forward_macs(d, n)
        t, D, L = n + 1, 768, 12
        assert f["attn_proj"] == L * 4 * t * D * D
        assert f["attn_matmul"] == L * 2 * t * t * D
        assert f["mlp"] == L * 8 * t * D * D
        assert f["patch_embed"] == n * 3 * 16 * 16 * D  # only the active patches are embedded
        assert f["head"] == D * 1000
        assert f["other"] == (2 * L + 1) * t * D * 5  # LayerNorms, fvcore's 5 per element
    assert forward_macs(d, 0) == {g: 0 for g in GROUPS}
    s = step_macs(d, 196)
    assert all(s[g] == 2 * forward_macs(d, 196)[g] for g in GROUPS)
    ex = step_macs(d, 196, backward="exact")
    assert ex["attn_matmul"] == 3 * forward_macs(d, 196)["attn_matmul"] and ex["mlp"] == s["mlp"]


def test_ideal_ratios_methods_md(dims):
    """DMI/PRI = 2.7x, 6.5x, 12.4x for v = 2, 4, 7 on DeiT-B; SMI(default)/PRI(v=7) about 3x."""
    paper = {2: 2.7, 4: 6.5, 7: 12.4}
    with_cls = ideal_ratios(dims["deit_base_patch16_224"])
    patches_only = ideal_ratios(dims["deit_base_patch16_224"], prefix=False)
    for v, want in paper.items():
        # counting patch tokens only (the paper's convention) reproduces the figures to one decimal
        assert round(patches_only[v]["dmi_over_pri"], 1) == want
        # with the CLS token, as the suite counts, they agree within rounding
        assert with_cls[v]["dmi_over_pri"] == pytest.approx(want, abs=0.06)
    assert round(with_cls[7]["smi_over_pri"]) == 3 and round(patches_only[7]["smi_over_pri"]) == 3
    # every DeiT: up to ~12x over DMI, and PRI v=4 cheaper than SMI default
    for name in DEITS:
        r = ideal_ratios(dims[name])
        assert 12 < r[7]["dmi_over_pri"] < 13 and 2.6 < r[2]["dmi_over_pri"] < 2.8
        assert r[4]["smi_over_pri"] > 1.5 and r[7]["smi_over_pri"] > 2.9


@pytest.mark.parametrize("name", list(DEITS))
def test_theorem1_deit(dims, name):
    d = dims[name]
    for v in (2, 4, 7):
        r = theorem1(d, v)
        assert r["mlp_holds_integral"] and r["mlp_holds_closed"] and r["attn_holds_integral"] and r["attn_holds_closed"]
        assert r["verdicts_agree"]
        assert r["mlp_ratio_closed"] == pytest.approx((v + 1) / (2 * v))
        # integrals count CLS and the floor of T/v: within 3 % of the closed forms
        assert abs(r["mlp_rel_diff"]) < 0.03 and abs(r["attn_rel_diff"]) < 0.03
        # without the CLS token the integral is the closed form (T/v exact for v = 2, 4)
        if 4000 % v == 0:
            p = theorem1(d, v, prefix=False)
            assert p["mlp_ratio_integral"] == pytest.approx(p["mlp_ratio_closed"], rel=1e-9)
            assert p["attn_ratio_integral"] == pytest.approx(p["attn_ratio_closed"], rel=1e-9)


def test_theorem1_attention_iff():
    """PRI <= SMI* in attention iff N/D <= 6v/(2v-1): the integral agrees on both sides of the bound."""
    for v in (2, 4, 7):
        bound = 6 * v / (2 * v - 1)
        for nd in (0.25, 1.0, 0.8 * bound, 1.25 * bound, 8.0):
            d = 64
            dm = synthetic(int(round(nd * d)) // v * v or v, d)
            r = theorem1(dm, v, iterations=4200, prefix=False)
            assert r["attn_holds_integral"] == (dm.num_patches / d <= bound), (v, nd, r)
            assert r["verdicts_agree"]
            assert r["mlp_holds_integral"]


def test_pri_counts_and_images():
    n, T = 196, 4000
    for v, per in ((2, 98), (4, 49), (7, 28)):
        s = PRI(v)
        prof = schedule_profile(s, n, T)
        assert sorted(prof["steps"], reverse=True) == [n - k * per for k in range(v)]
        assert all(it == T // v for it in prof["steps"].values())
        assert prof["images_per_trajectory"] == v
        assert sorted(prof["scores"], reverse=True) == [n - k * per for k in range(v - 1)]
        assert s.active_counts(n, T)[-1] == (0 if T % v else per)
    smi = schedule_profile(SMI(), n, T)
    assert sorted(smi["steps"], reverse=True) == [196, 137, 95, 66, 46]
    assert smi["steps"][46] == T - 300 and smi["steps"][196] == 50
    star = schedule_profile(IdealSMI(46), n, T)
    assert star["steps"] == {46: T} and star["scores"] == {196: 1}


def test_schedule_cost_per_image(dims):
    d = dims["deit_tiny_patch16_224"]
    T = 4000
    dmi = schedule_cost(d, DMI(), T)
    assert dmi["total"] == pytest.approx(T * sum(step_macs(d, 196).values()))
    assert dmi["score_macs_per_image"] == 0
    pri = schedule_cost(d, PRI(4), T)
    steps = sum(T // 4 * sum(step_macs(d, k).values()) for k in (196, 147, 98, 49)) / 4
    scores = sum(sum(forward_macs(d, k, score=True).values()) for k in (196, 147, 98)) / 4
    assert pri["total"] == pytest.approx(steps + scores)
    rnd = schedule_cost(d, PRI(4, score="random"), T)
    assert rnd["total"] == pytest.approx(steps)
    # SMI at matched sparsity ends near N/v patches
    tags = standard_schedules(196, T)
    for v in (2, 4, 7):
        final = tags[Spec("smi", v).tag].active_counts(196, T)[-1]
        assert abs(final - 196 / v) <= 3
        assert tags[Spec("smi_star", v).tag].keep == 196 // v
    assert tags["smi_star"].keep == 46


def test_tags_and_errors():
    assert isinstance(build("pri_random_v4", 196, 4000), PRI)
    assert build("pri_random_v4", 196, 4000).score == "random"
    assert isinstance(build("smi_v7", 196, 4000), SMI)
    assert build("smi_default", 196, 100).prune_at == [1, 2, 5, 8]
    with pytest.raises(PriError) as e:
        build("pri_vx", 196, 4000)
    assert e.value.option == "--schedule"
    with pytest.raises(PriError) as e:
        step_macs(synthetic(196, 64), 10, backward="nope")
    assert e.value.option == "--backward"
    assert math.isfinite(theorem1(synthetic(49, 96, 4), 7)["attn_ratio_integral"])
    with pytest.raises(PriError) as e:
        IdealSMI(5, score="bogus").validate(49, 10, 4)
    assert e.value.option == "--score"
