"""Token-sparse forward: equivalence with timm, gradient locality, the CLS-row score."""
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from pri.core.vit import all_patches, check_model, index_to_mask, mask_to_index, num_patches, patchify, sparse_forward
from pri.errors import PriError
from pri.files.models import build_model

MODELS = [
    "vit_pico_patch4_28",
    "vit_pico_patch4_32",
    "vit_pico_patch2_8",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "vit_base_patch32_224",
]


def _input(model, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    pe = model.patch_embed
    return torch.randn(b, pe.proj.in_channels, *pe.img_size, generator=g)


@pytest.mark.parametrize("name", MODELS)
def test_all_patches_match_timm_forward(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    b = 1 if "base" in name or "small" in name else 3
    x = _input(model, b)
    with torch.no_grad():
        ref = model(x)
        dense = sparse_forward(model, x)
        explicit = sparse_forward(model, x, all_patches(b, num_patches(model)))
    assert (ref - dense).abs().max().item() <= 1e-5
    assert (ref - explicit).abs().max().item() <= 1e-5


def test_patch_order_does_not_matter():
    torch.manual_seed(1)
    model = build_model("vit_pico_patch4_28").eval()
    x = _input(model, 2)
    idx = torch.tensor([[3, 10, 20, 41], [0, 5, 6, 48]])
    with torch.no_grad():
        a = sparse_forward(model, x, idx)
        b = sparse_forward(model, x, idx.flip(1))
    assert (a - b).abs().max().item() <= 1e-5


def test_sparse_forward_equals_dense_forward_on_zeroed_attention():
    """A sparse forward is not the dense forward of a masked image: it is the dense forward
    of a model that never sees the other tokens. Check it against an explicit attention mask."""
    torch.manual_seed(2)
    model = build_model("vit_pico_patch4_28").eval()
    x = _input(model, 2)
    n = num_patches(model)
    idx = torch.tensor([[1, 7, 9, 30, 31], [2, 3, 4, 40, 47]])
    keep = torch.cat([torch.ones(2, 1, dtype=torch.bool), index_to_mask(idx, n)], dim=1)  # CLS + patches
    attn_mask = keep[:, None, None, :]  # keys outside the active set are masked for every query
    with torch.no_grad():
        h = model.patch_embed(x)
        h = model._pos_embed(h)
        h = model.norm_pre(h)
        for blk in model.blocks:
            h = blk(h, attn_mask=attn_mask)
        ref = model.forward_head(model.norm(h))
        out = sparse_forward(model, x, idx)
    assert (ref - out).abs().max().item() <= 1e-5


def test_gradient_reaches_only_active_pixels():
    torch.manual_seed(3)
    model = build_model("vit_pico_patch4_28").requires_grad_(False).eval()
    x = _input(model, 2).requires_grad_(True)
    idx = torch.tensor([[0, 8, 17, 48], [5, 6, 24, 33]])
    loss = F.cross_entropy(sparse_forward(model, x, idx), torch.tensor([1, 2]))
    loss.backward()
    gp = patchify(x.grad, 4)  # [B, N, C*p*p]
    active = index_to_mask(idx, 49)
    assert (gp[~active] == 0).all()
    assert (gp[active].abs().sum(-1) > 0).all()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name,layer", [("vit_pico_patch4_28", -1), ("deit_tiny_patch16_224", -1),
                                        ("vit_pico_patch4_28", 1), ("deit_tiny_distilled_patch16_224", -1)])
def test_score_is_cls_row_of_explicit_attention(name, layer):
    torch.manual_seed(4)
    model = build_model(name).eval()
    b = 2
    x = _input(model, b)
    n = num_patches(model)
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(n, generator=g)[: n // 3].sort().values for _ in range(b)])
    blk = model.blocks[layer]
    blk.attn.fused_attn = False  # explicit softmax(QK^T) path inside timm
    seen = {}
    hook = blk.attn.attn_drop.register_forward_hook(lambda m, i, o: seen.setdefault("attn", i[0].detach()))
    with torch.no_grad():
        logits, score = sparse_forward(model, x, idx, with_score=True, score_layer=layer)
        ref_logits = sparse_forward(model, x, idx)
    hook.remove()
    attn = seen["attn"]  # [B, heads, P+K, P+K], P prefix tokens (CLS first)
    ref = attn[:, :, 0, model.num_prefix_tokens:].mean(dim=1)
    assert score.shape == (b, n // 3)
    assert (score - ref).abs().max().item() <= 1e-5
    assert (logits - ref_logits).abs().max().item() <= 1e-5


def test_mask_index_round_trip():
    idx = torch.tensor([[0, 3, 5], [1, 2, 7]])
    assert torch.equal(mask_to_index(index_to_mask(idx, 8)), idx)
    with pytest.raises(ValueError):
        mask_to_index(torch.tensor([[True, False], [True, True]]))


def test_models_without_class_token_are_refused():
    gap = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2,
                            class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        check_model(gap)


def test_unknown_model_names_the_option():
    with pytest.raises(PriError) as e:
        build_model("no_such_vit")
    assert e.value.option == "--model"


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "vit_small_patch14_reg4_dinov2",
                                  "deit3_small_patch16_224"])
def test_prefix_tokens_as_timm_builds_them(name):
    """Distillation token (averaged heads), registers with no_embed_class, DeiT-III: all patches = timm."""
    import timm

    torch.manual_seed(5)
    side = 56 if "patch14" in name else 64
    model = timm.create_model(name, img_size=side, depth=2, num_classes=10).eval()
    assert model.num_prefix_tokens > 1 or name.startswith("deit3")
    x = _input(model, 2)
    with torch.no_grad():
        assert (model(x) - sparse_forward(model, x)).abs().max().item() <= 1e-5


def test_padded_sparse_images_pool_their_own_patches():
    """An average-pool head over a padded batch equals each image's own sparse forward."""
    from pri.core.vit import padded_index

    torch.manual_seed(6)
    model = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2,
                              global_pool="avg", num_classes=5).eval()
    x = _input(model, 2)
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[0, [1, 5, 9]] = True
    mask[1, [0, 2, 4, 6, 8, 40]] = True
    idx, valid = padded_index(mask)
    with torch.no_grad():
        both = sparse_forward(model, x, idx, valid=valid)
        alone = [sparse_forward(model, x[i:i + 1], mask_to_index(mask[i:i + 1])) for i in range(2)]
    assert (both - torch.cat(alone)).abs().max().item() <= 1e-5


def test_a_model_without_classifier_head_names_num_classes():
    with pytest.raises(PriError) as e:
        build_model("vit_small_patch14_reg4_dinov2", img_size=28)
    assert e.value.option == "--num-classes" and "num_classes=0" in str(e.value)
    assert build_model("vit_small_patch14_reg4_dinov2", img_size=28, num_classes=10).num_classes == 10


def test_checkpoint_at_another_image_size_is_resampled(tmp_path):
    """timm's rule: the position embedding of a 28-px checkpoint is resampled to a 36-px grid; the
    ledger's teacher provenance says from which grid; at its own size nothing is resampled."""
    from pri.files.models import load_model

    torch.manual_seed(7)
    path = tmp_path / "w.pth"
    torch.save(build_model("vit_pico_patch4_28").state_dict(), path)
    big = load_model("vit_pico_patch4_28", str(path), img_size=36)
    assert big.provenance["pos_embed_resampled_from"] == [7, 7] and big.provenance["img_size"] == 36
    assert big.model.pos_embed.shape[1] == 1 + 81
    same = load_model("vit_pico_patch4_28", str(path))
    assert "pos_embed_resampled_from" not in same.provenance
    assert torch.equal(same.model.pos_embed, torch.load(path, weights_only=True)["pos_embed"])


def test_eva_rotary_embedding_at_the_kept_patches_own_positions():
    """EVA-02's sparse forward on a subset equals its dense forward with the other patches masked out
    as keys (so the rotary terms are those of each kept patch's own position), and the score is the
    CLS row of the block's own attention, rotary terms included."""
    import timm

    torch.manual_seed(8)
    model = timm.create_model("eva02_tiny_patch14_224", img_size=56, depth=2, num_classes=5,
                              global_pool="token").eval()
    check_model(model)
    x = _input(model, 2)
    n, npre = num_patches(model), model.num_prefix_tokens
    idx = torch.tensor([[0, 3, 5, 9, 15], [1, 2, 7, 8, 14]])
    keep = torch.cat([torch.ones(2, npre, dtype=torch.bool), index_to_mask(idx, n)], dim=1)
    blk = model.blocks[-1]
    blk.attn.fused_attn = False
    seen = {}
    hook = blk.attn.attn_drop.register_forward_hook(lambda m, i, o: seen.setdefault("attn", i[0].detach()))
    with torch.no_grad():
        logits, score = sparse_forward(model, x, idx, with_score=True)
        hook.remove()
        dense = model.forward_head(model.forward_features(x, attn_mask=keep[:, None, None, :]))
    assert (logits - dense).abs().max().item() <= 1e-5
    ref = seen["attn"][:, :, 0, npre:].mean(dim=1)
    assert (score - ref).abs().max().item() <= 1e-5
