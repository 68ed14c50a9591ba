"""Every ViT-like model timm lists is inverted exactly or refused in one line.

Each model is built as a user would have it (random weights, 10 classes), small: depth 2, a narrow
width and a small image where its constructor takes them. Then either the suite refuses it
(``check_model``, one line) or the sparse forward at all patches equals ``model(x)`` and one DMI and
one PRI step run through the engine. The counts are printed; "failing" must be 0.
"""
from __future__ import annotations

import re

import pytest
import torch

# timm's modules of ViT-like families: VisionTransformer and its subclasses (distilled DeiT), the
# rotary (Eva) and relative-position (BEiT, relpos, SAM) families, hybrids, and other token ViTs
FAMILIES = ("vision_transformer", "deit", "eva", "beit", "vision_transformer_relpos", "vision_transformer_sam",
            "vision_transformer_hybrid", "cait", "xcit", "naflexvit")
TOL = 1e-5


def vit_like_names() -> list[str]:
    import timm
    from timm.models._registry import _model_to_module

    return [n for n in timm.list_models() if _model_to_module.get(n) in FAMILIES]


def _patch(name: str) -> int:
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else 16


def build_small(name: str):
    """The model at the smallest settings timm accepts for it (None when it builds at none)."""
    import timm

    p = _patch(name)
    narrow = [dict(embed_dim=64, num_heads=2), dict(embed_dim=128, num_heads=2),
              dict(embed_dim=64, num_heads=2, num_kv_heads=(2, 2)), {}]
    tries = [dict(img_size=s, depth=2, **w) for w in narrow for s in (2 * p, 4 * p)] + [dict(depth=2), {}]
    for kw in tries:
        try:
            torch.manual_seed(0)
            return timm.create_model(name, pretrained=False, num_classes=10, **kw).eval()
        except Exception:  # noqa: BLE001 - this size or width is not one the constructor takes: try the next
            continue
    return None


def one_step(model, tag: str) -> int:
    from pri.core.engine import InversionConfig, Teacher, invert
    from pri.core.schedules import Spec
    from pri.core.vit import num_patches

    spec = Spec.parse(tag)
    schedule = spec.build(num_patches(model), 2, {})
    teacher = Teacher(model=model, name="t", mean=(0.5,) * 3, std=(0.5,) * 3)
    cfg = InversionConfig(iterations=2, batch=2, seed=0, device="cpu", progress=False)
    pool = invert(teacher, schedule, cfg)
    return int(pool["images"].shape[0])


def classify(name: str) -> tuple[str, str]:
    """('exact' | 'refused' | 'failing' | 'unbuilt', detail)."""
    from pri.core.vit import check_model, sparse_forward

    model = build_small(name)
    if model is None:
        return "unbuilt", "timm builds it at no size tried"
    try:
        check_model(model)
    except ValueError as e:
        msg = str(e)
        return ("refused", msg) if "\n" not in msg and msg else ("failing", f"multi-line refusal: {msg!r}")
    try:
        pe = model.patch_embed
        x = torch.randn(2, pe.proj.in_channels, *pe.img_size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref, got = model(x), sparse_forward(model, x)
        err = float((ref - got).abs().max()) / max(1.0, float(ref.abs().max()))
        if not err <= TOL:
            return "failing", f"sparse forward differs from model(x) by {err:.2e}"
        if one_step(model, "dmi") != 2 or one_step(model, "pri_v2") != 2:
            return "failing", "a DMI or PRI step wrote the wrong number of images"
    except Exception as e:  # noqa: BLE001 - any traceback is a failure of the suite
        return "failing", f"{type(e).__name__}: {e}"
    return "exact", f"{err:.1e}"


def test_every_vit_like_timm_model_is_exact_or_refused(capsys):
    names = vit_like_names()
    assert len(names) > 200, "timm's registry lost its ViT families: the test would check nothing"
    results = {n: classify(n) for n in names}
    counts = {k: sum(r[0] == k for r in results.values()) for k in ("exact", "refused", "failing", "unbuilt")}
    with capsys.disabled():
        print(f"\nregistry: {len(names)} ViT-like timm models: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    failing = {n: d for n, (k, d) in results.items() if k == "failing"}
    assert not failing, failing
    assert counts["exact"] >= 50 and counts["refused"] >= 50
    assert counts["unbuilt"] <= len(names) // 20


@pytest.mark.parametrize("name, family", [
    ("deit_tiny_distilled_patch16_224", "exact"),
    ("vit_small_patch14_reg4_dinov2", "exact"),
    ("eva02_tiny_patch14_224", "exact"),
    ("beit_base_patch16_224", "refused"),
    ("vit_small_patch16_18x2_224", "refused"),
    ("vit_medium_patch16_gap_256", "refused"),
])
def test_the_issue_table(name, family):
    assert classify(name)[0] == family
