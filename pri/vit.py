"""Token-sparse forward over any timm VisionTransformer with a class token.

A sparse forward embeds only the active patches, adds each one's own position embedding,
prepends the prefix tokens (CLS, and register tokens if the model has them) and runs timm's
own blocks unchanged. With every patch active it equals ``model(x)``.

The importance score used by SMI and PRI is the last block's attention row of the CLS query
over the active patch keys, averaged over heads. It is computed only when asked for (one
extra q_cls . K^T product); every other forward keeps timm's fused attention kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_model(model: nn.Module) -> None:
    """Raise ValueError unless ``model`` is a timm VisionTransformer we can run sparsely."""
    need = ("patch_embed", "blocks", "pos_embed", "forward_head")
    missing = [a for a in need if not hasattr(model, a)]
    if missing:
        raise ValueError(f"model {type(model).__name__} is not a timm VisionTransformer (lacks {missing})")
    if getattr(model, "cls_token", None) is None:
        raise ValueError("model has no class token: PRI/SMI need a CLS token (use a ViT with class_token=True)")
    if getattr(model, "dynamic_img_size", False):
        raise ValueError("dynamic_img_size ViTs are not supported: build the model at a fixed img_size")
    if not isinstance(getattr(model.patch_embed, "proj", None), nn.Conv2d):
        raise ValueError("model.patch_embed.proj must be a Conv2d patch projection")


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
    prefix = [model.cls_token.expand(B, -1, -1)]
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(B, -1, -1))
    prefix = torch.cat(prefix, dim=1)
    pos = model.pos_embed
    if model.no_embed_class:
        patch_pos = pos
    else:
        prefix = prefix + pos[:, :npre]
        patch_pos = pos[:, npre:]
    if idx is None:
        tokens = tokens + patch_pos
    else:
        tokens = tokens + patch_pos.expand(B, -1, -1).gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return torch.cat([prefix, tokens], dim=1)


def cls_attention_row(block: nn.Module, x: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Attention of the CLS query over the patch keys in ``block``, averaged over heads.

    Softmax runs over all keys (prefix tokens included), as the block computes it; the
    columns of the patch keys are returned: [B, K].
    """
    attn = block.attn
    h = block.norm1(x)
    B, T, _ = h.shape
    qkv = attn.qkv(h).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q, k = attn.q_norm(q), attn.k_norm(k)
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
):
    """Logits of ``model`` on the active patches ``idx`` ([B, K] patch indices) of ``x``.

    ``idx=None`` means all patches. With ``with_score`` also returns the CLS-row attention
    of block ``score_layer`` over the active patch keys, averaged over heads ([B, K]).
    ``valid`` (bool [B, K]): images with fewer active patches than K, padded: the padded
    positions are masked out of every attention (as keys), so they change no real token.
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
    for i, blk in enumerate(blocks):
        if with_score and i == at:
            score = cls_attention_row(blk, h, model.num_prefix_tokens)
        h = blk(h) if mask is None else blk(h, attn_mask=mask)
    h = model.norm(h)
    logits = model.forward_head(h)
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
