"""Token-sparse forward over a timm VisionTransformer with a class token.

A sparse forward embeds only the active patches, adds each one's own position embedding,
prepends the prefix tokens as timm builds them (CLS, then the distillation token of a distilled
DeiT or the register tokens, with timm's position-embedding rule for the model) and runs timm's
own blocks unchanged; the head is timm's own (a distilled DeiT averages its two heads, as its
eval forward does). With every patch active it equals ``model(x)``.

The importance score used by SMI and PRI is the last block's attention row of the CLS query
over the active patch keys, averaged over heads (for a distilled DeiT too: the class token's
row, not the distillation token's). It is computed only when asked for (one extra q_cls . K^T
product); every other forward keeps timm's fused attention kernel.

Eva/EVA-02 runs with its rotary embedding taken at each kept patch's own position. Families the
sparse forward does not know are refused by ``check_model`` in one line naming the model class and
the reason: relative-position attention (BEiT, relpos, SAM), parallel or post-norm blocks, hybrid
(CNN-stem) embeddings, attention-pool heads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# model classes whose attention the sparse forward would get wrong: the reason, said in the refusal
_REFUSED_FAMILIES = {
    "Beit": "relative position bias (BEiT attention) is not applied by the sparse forward",
    "VisionTransformerRelPos": "relative position attention is not applied by the sparse forward",
    "VisionTransformerSAM": "windowed attention with relative positions (SAM) is not supported",
}


def _known_blocks(model: nn.Module) -> tuple[type, type]:
    """(block class, attention class) the sparse forward reproduces for ``model``'s family."""
    if type(model).__name__ == "Eva":
        from timm.models.eva import EvaAttention, EvaBlock

        return EvaBlock, EvaAttention
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    return Block, Attention


def check_model(model: nn.Module) -> None:
    """Raise ValueError, in one line naming the model class and the reason, unless ``model`` is a
    timm VisionTransformer (or distilled DeiT, or Eva with its rotary embedding) whose forward the
    sparse forward reproduces exactly."""
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    kind = type(model).__name__
    if kind in _REFUSED_FAMILIES:
        raise ValueError(f"{kind}: {_REFUSED_FAMILIES[kind]}")
    if not isinstance(model, VisionTransformer) and kind != "Eva":
        raise ValueError(f"{kind} is not a timm VisionTransformer, distilled DeiT or Eva")
    if getattr(model, "cls_token", None) is None:
        raise ValueError("model has no class token: PRI/SMI need a CLS token (use a ViT with class_token=True)")
    if getattr(model, "dynamic_img_size", False):
        raise ValueError("dynamic_img_size ViTs are not supported: build the model at a fixed img_size")
    pe = model.patch_embed
    if type(pe) is not PatchEmbed or not isinstance(getattr(pe, "proj", None), nn.Conv2d) or pe.proj.padding != (0, 0):
        raise ValueError(f"patch embedding {type(pe).__name__} is not a plain Conv2d patch projection "
                         "(hybrid CNN stems are not supported)")
    if any(int(s) % int(q) for s, q in zip(pe.img_size, pe.patch_size)):
        raise ValueError(f"image size {tuple(pe.img_size)} is not a multiple of the patch size {tuple(pe.patch_size)}")
    _check_blocks(model)
    if getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg"):
        raise ValueError(f"global_pool={model.global_pool!r}: the sparse forward pools by the class token or "
                         "an average of the patch tokens (an attention-pool head is refused)")
    if model.num_classes == 0:
        raise ValueError("the model has no classifier head (num_classes=0): give --num-classes N, the classes "
                         "of the checkpoint's head")


def _check_blocks(model: nn.Module) -> None:
    block, attention = _known_blocks(model)
    for i, blk in enumerate(model.blocks):
        if type(blk) is not block or type(getattr(blk, "attn", None)) is not attention:
            what = type(blk).__name__ if type(blk) is not block else type(blk.attn).__name__
            raise ValueError(f"block {i} is a {what}: the sparse forward knows timm's pre-norm {block.__name__} with "
                             f"its {attention.__name__} (parallel, post-norm and other blocks are refused)")
    rope = getattr(model, "rope", None)
    if rope is not None and not hasattr(rope, "feat_shape"):
        raise ValueError(f"rotary embedding {type(rope).__name__} has no fixed patch grid: it is not supported")
    drop = getattr(model, "patch_drop", None)
    if drop is not None and float(getattr(drop, "prob", 0.0)) > 0:
        raise ValueError("patch dropout is on (patch_drop_rate > 0): build the model without it")


def prefix_tokens(model: nn.Module) -> list[torch.Tensor]:
    """The prefix tokens in timm's order: CLS, then the distillation token or the register tokens."""
    out = [model.cls_token]
    for name in ("dist_token", "reg_token"):
        t = getattr(model, name, None)
        if t is not None:
            out.append(t)
    return out


def grid_size(model: nn.Module) -> tuple[int, int]:
    g = model.patch_embed.grid_size
    return int(g[0]), int(g[1])


def num_patches(model: nn.Module) -> int:
    gh, gw = grid_size(model)
    return gh * gw


def patch_size(model: nn.Module) -> int:
    p = model.patch_embed.patch_size
    return int(p[0]) if isinstance(p, (tuple, list)) else int(p)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, C*p*p] in row-major patch order, channel-major within a patch
    (the layout of a Conv2d(kernel=stride=p) weight)."""
    B, C, H, W = x.shape
    gh, gw = H // p, W // p
    x = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, gh * gw, C * p * p)


def embed_patches(model: nn.Module, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """Patch embedding of the active patches only: [B, K, D] (K = N when idx is None)."""
    pe = model.patch_embed
    proj: nn.Conv2d = pe.proj
    p = patch_size(model)
    patches = patchify(x, p)  # [B, N, C*p*p]
    if idx is not None:
        patches = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    w = proj.weight.reshape(proj.out_channels, -1)
    tokens = F.linear(patches, w, proj.bias)
    return pe.norm(tokens)


def _prefix_and_pos(model: nn.Module, tokens: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    B = tokens.shape[0]
    npre = model.num_prefix_tokens
    prefix = torch.cat([t.expand(B, -1, -1) for t in prefix_tokens(model)], dim=1)
    pos = model.pos_embed
    if pos is None:
        patch_pos = None
    elif model.no_embed_class:
        patch_pos = pos
    else:
        prefix = prefix + pos[:, :npre]
        patch_pos = pos[:, npre:]
    if patch_pos is not None and idx is None:
        tokens = tokens + patch_pos
    elif patch_pos is not None:
        tokens = tokens + patch_pos.expand(B, -1, -1).gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return torch.cat([prefix, tokens], dim=1)


def _head(model: nn.Module, h: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """timm's head; an average pool over padded sparse images averages the real patches only."""
    if valid is None or model.global_pool == "token":
        return model.forward_head(h)
    npre = model.num_prefix_tokens
    keep = valid.to(h.dtype).unsqueeze(-1)
    total = (h[:, npre:] * keep).sum(1)
    count = keep.sum(1)
    if getattr(model, "pool_include_prefix", False):
        total, count = total + h[:, :npre].sum(1), count + npre
    x = model.head_drop(model.fc_norm(total / count.clamp_min(1)))
    return model.head(x)


def _rope(model: nn.Module, idx: torch.Tensor | None):
    """Eva's rotary embedding at the active patches' own positions (None for other families): the
    table of every patch, or its rows at ``idx`` per image, shaped as timm shapes kept patches."""
    rope = getattr(model, "rope", None)
    if rope is None:
        return None
    full = rope.get_embed()  # [N, dim], or [depth, heads, N, dim] for mixed rope
    if idx is None:
        return full
    if getattr(model, "rope_mixed", False):
        return full[:, :, idx].permute(0, 2, 1, 3, 4)  # [depth, B, heads, K, dim]
    return full[idx].unsqueeze(1)  # [B, 1, K, dim]


def _query_key(attn: nn.Module, h: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's queries and keys [B, heads, T, head_dim], as its attention computes them."""
    B, T, _ = h.shape
    if getattr(attn, "qkv", None) is None:  # Eva with separate projections
        q, k = (proj(h).reshape(B, T, attn.num_heads, -1).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj))
    else:
        if getattr(attn, "q_bias", None) is None:
            qkv = attn.qkv(h)
        else:
            bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            qkv = attn.qkv(h) + bias if attn.qkv_bias_separate else F.linear(h, attn.qkv.weight, bias)
        q, k = qkv.reshape(B, T, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)[:2]
    q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        from timm.layers import apply_rot_embed_cat

        npt, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
        q, k = (torch.cat([t[:, :, :npt], apply_rot_embed_cat(t[:, :, npt:], rope, half=half)], dim=2) for t in (q, k))
    return q, k


def cls_attention_row(block: nn.Module, x: torch.Tensor, num_prefix: int, rope=None) -> torch.Tensor:
    """Attention of the CLS query over the patch keys in ``block``, averaged over heads.

    Softmax runs over all keys (prefix tokens included), as the block computes it; the
    columns of the patch keys are returned: [B, K].
    """
    attn = block.attn
    q, k = _query_key(attn, block.norm1(x), rope)
    logits = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)  # [B, H, 1, T]
    row = logits.float().softmax(dim=-1)[:, :, 0, num_prefix:]
    return row.mean(dim=1)


def sparse_forward(
    model: nn.Module,
    x: torch.Tensor,
    idx: torch.Tensor | None = None,
    with_score: bool = False,
    score_layer: int = -1,
    valid: torch.Tensor | None = None,
    layers: list | None = None,
):
    """Logits of ``model`` on the active patches ``idx`` ([B, K] patch indices) of ``x``.

    ``idx=None`` means all patches. With ``with_score`` also returns the CLS-row attention
    of block ``score_layer`` over the active patch keys, averaged over heads ([B, K]).
    ``valid`` (bool [B, K]): images with fewer active patches than K, padded: the padded
    positions are masked out of every attention (as keys), so they change no real token.
    ``layers``: a list that receives every block's output tokens [B, T, D], in order.
    """
    tokens = embed_patches(model, x, idx)
    h = _prefix_and_pos(model, tokens, idx)
    h = model.pos_drop(h)
    h = model.norm_pre(h)
    mask = None
    if valid is not None:
        keep = torch.cat([torch.ones(valid.shape[0], model.num_prefix_tokens, dtype=torch.bool, device=valid.device),
                          valid], dim=1)
        mask = keep[:, None, None, :]  # [B, 1, 1, T]: every query attends to the real tokens only
    blocks = model.blocks
    score = None
    nblk = len(blocks)
    if not -nblk <= score_layer < nblk:
        raise ValueError(f"score layer {score_layer} outside the model's {nblk} blocks")
    at = score_layer % nblk
    rope = _rope(model, idx)
    mixed = rope is not None and getattr(model, "rope_mixed", False)
    for i, blk in enumerate(blocks):
        kw = {} if rope is None else {"rope": rope[i] if mixed else rope}
        if with_score and i == at:
            score = cls_attention_row(blk, h, model.num_prefix_tokens, kw.get("rope"))
        h = blk(h, **kw) if mask is None else blk(h, attn_mask=mask, **kw)
        if layers is not None:
            layers.append(h)
    h = model.norm(h)
    logits = _head(model, h, valid)
    return (logits, score) if with_score else logits


def all_patches(batch: int, n: int, device=None) -> torch.Tensor:
    return torch.arange(n, device=device).unsqueeze(0).expand(batch, -1).contiguous()


def mask_to_index(mask: torch.Tensor) -> torch.Tensor:
    """bool masks [B, N] with the same count per row -> sorted indices [B, K]."""
    counts = mask.sum(1)
    if counts.numel() and not bool((counts == counts[0]).all()):
        raise ValueError("mask_to_index needs the same number of active patches in every row")
    k = int(counts[0]) if counts.numel() else 0
    return mask.nonzero()[:, 1].reshape(mask.shape[0], k)


def index_to_mask(idx: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.zeros(idx.shape[0], n, dtype=torch.bool, device=idx.device)
    m.scatter_(1, idx, True)
    return m


def padded_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool masks [B, N] with any counts -> (indices [B, K_max], valid [B, K_max]): each row's
    active patches in increasing order, padded at the end (with patch 0, masked out by ``valid``)."""
    counts = mask.sum(1)
    k = int(counts.max()) if counts.numel() else 0
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :k]  # active first, in order
    valid = torch.arange(k, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)
    return torch.where(valid, order, torch.zeros_like(order)), valid
