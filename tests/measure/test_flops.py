"""fvcore's count of the sparse forward agrees with the analytic cost model (pri/measure/cost.py)."""
from __future__ import annotations

import pytest
import torch

from pri.core.schedules import DMI, PRI, SMI
from pri.files.models import build_model
from pri.measure.cost import COMPARED, GROUPS, ModelDims, forward_macs, schedule_cost, schedule_profile
from pri.measure.flops import FlopCounter, count_forward, meta_copy

COUNTS = (196, 98, 49, 28)


def meta_model(name):
    with torch.device("meta"):
        return build_model(name).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def tiny():
    return build_model("deit_tiny_patch16_224").eval().requires_grad_(False)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"])
def test_fvcore_matches_cost_model_deit(name):
    m = meta_model(name)
    d = ModelDims.from_model(m)
    for n in COUNTS:
        for score in (False, True) if n in (196, 28) else (False,):
            fv = count_forward(m, n, with_score=score)["groups"]
            an = forward_macs(d, n, score=score)
            lhs, rhs = sum(fv[g] for g in COMPARED), sum(an[g] for g in COMPARED)
            assert lhs == pytest.approx(rhs, rel=0.01), (name, n, score)
            for g in ("attn_matmul", "attn_proj", "mlp", "patch_embed"):
                assert fv[g] == pytest.approx(an[g], rel=0.01), (name, n, g)
            # LayerNorm etc. are reported apart, and agree too
            assert fv["other"] == pytest.approx(an["other"], rel=0.01)


def test_meta_copy_counts_like_real_model(tiny):
    real = count_forward(tiny, 49)
    meta = count_forward(meta_copy(tiny), 49)
    assert real["groups"] == meta["groups"] and real["skipped"] == meta["skipped"]
    assert next(tiny.parameters()).device.type == "cpu"  # the original is untouched


def test_sdpa_handler_matters():
    m = meta_model("deit_tiny_patch16_224")
    d = ModelDims.from_model(m)
    with_h = count_forward(m, 196)
    without = count_forward(m, 196, sdpa_handler=False)
    # without the handler fvcore counts timm's fused attention as nothing, and says so only in unsupported ops
    assert without["groups"]["attn_matmul"] == 0
    assert without["skipped"].get("aten::scaled_dot_product_attention") == 12
    assert with_h["groups"]["attn_matmul"] == 12 * 2 * 197 * 197 * 192
    assert "aten::scaled_dot_product_attention" not in with_h["skipped"]
    missing = 1 - sum(without["groups"][g] for g in COMPARED) / sum(with_h["groups"][g] for g in COMPARED)
    assert missing > 0.14  # 14 % of DeiT-Ti's forward at 196 patches
    assert with_h["groups"]["attn_matmul"] == pytest.approx(forward_macs(d, 196)["attn_matmul"])


def test_small_vit_and_schedule_integral():
    m = meta_model("vit_pico_patch4_28")
    d = ModelDims.from_model(m)
    fc = FlopCounter(m)
    T = 200
    needed = set()
    for s in (DMI(), SMI([3, 5, 10, 15]), PRI(4), PRI(7, score="random")):
        prof = schedule_profile(s, 49, T)
        needed |= {(k, False) for k in prof["steps"]} | {(k, True) for k in prof["scores"]}
        f = fc.schedule(s, T)
        c = schedule_cost(d, s, T)
        assert f["compared"] == pytest.approx(c["compared"], rel=0.01)
        for g in GROUPS:
            assert f["macs_per_image"][g] == pytest.approx(c["macs_per_image"][g], rel=0.01, abs=1)
    # exactly the distinct (count, score forward) pairs were traced, each once
    assert set(fc.cache) == needed
    assert fc.skipped["aten::gelu"] == sum(r["skipped"].get("aten::gelu", 0) for r in fc.cache.values()) > 0
