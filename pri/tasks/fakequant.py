"""Fake-quantised ViT modules: the quantisers, the written-out block forward and the calibration
forward behind ``pri quantize`` (pri.tasks.quantize); the protocol is SMI's public quantisation,
whose modules are PSAQ-ViT's (docs/methods.md, section "Quantisation"); the code here is written fresh.

Weights (patch-embedding projection, qkv, proj, fc1, fc2, head): symmetric, per output channel,
min-max. scale = max(|min|, |max|) / ((2^b - 1) / 2), q = clamp(round(w / scale), -2^(b-1),
2^(b-1) - 1), w~ = q * scale. Biases stay float.

Activations: asymmetric, one scale and zero point per tensor from the running min and max over the
calibration forward(s) (no EMA, no percentile). scale = (max - min) / (2^b - 1) (at least float32's
eps, as PSAQ's observer), zp = clamp(-round(min / scale), 0, 2^b - 1); x~ = (clamp(round(x / scale)
+ zp, 0, 2^b - 1) - zp) * scale, computed as clamp(round(x / scale), -zp, 2^b - 1 - zp) * scale
(the same numbers: zp is an integer). Sites, in forward order: the input image, the patch-embedding
output, the tokens after the CLS concat, the position embedding itself, the sum after adding it;
per block the LN1 output, the qkv output (one range for q, k and v), the scaled attention logits
before softmax, attn @ v, the proj output, the first residual sum, the LN2 output, the GELU output,
the fc2 output, the second residual sum; then the final-norm CLS output and the logits. LayerNorm
arithmetic (q_norm/k_norm included, when a model has them), the fc1 output and softmax stay float.
The block forward is written out here (timm's fused attention hides the logits); it reads the
weights of timm's own modules.

Supported: timm's pre-norm ViT with a class token and an absolute position embedding covering it
(DeiT, the suite's small ViTs); anything else is refused by name (check_supported).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pri.core.vit import check_model, mask_to_index, patch_size, patchify

PRE_GATHER = ("sparse", "dense")
EPS = float(torch.finfo(torch.float32).eps)
CPU_CHUNK = 128  # images per forward on a CPU (see ``chunked``)

# ---------------------------------------------------------------------------------------------
# quantisers


def quantize_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel min-max fake-quant of ``w`` ([out, ...]): (dequantised w, scales [out])."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    scale = (flat.abs().amax(1) / ((2 ** bits - 1) / 2)).clamp(min=EPS)
    q = torch.round(flat / scale[:, None]).clamp(-2 ** (bits - 1), 2 ** (bits - 1) - 1)
    return (q * scale[:, None]).reshape(w.shape).to(w.dtype), scale


def act_qparams(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """Asymmetric per-tensor (scale, zero point) of the range [lo, hi], computed in float32 as PSAQ does."""
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    scale = ((hi_t - lo_t) / (2 ** bits - 1)).clamp(min=EPS)
    zp = (-torch.round(lo_t / scale)).clamp(0, 2 ** bits - 1)
    return float(scale), int(zp)


def fake_quant(x: torch.Tensor, scale: float, zp: int, bits: int, inplace: bool = False) -> torch.Tensor:
    """(clamp(round(x / scale) + zp, 0, 2^b - 1) - zp) * scale, in four elementwise passes."""
    x = x.div_(scale) if inplace else x.div(scale)
    return x.round_().clamp_(-zp, 2 ** bits - 1 - zp).mul_(scale)


class Observer:
    """Calibration: records the running min and max of every site and passes the tensor on unchanged."""

    def __init__(self):
        self.ranges: dict[str, list[float]] = {}

    def __call__(self, site: str, x: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
        r = self.ranges.get(site)
        self.ranges[site] = [lo, hi] if r is None else [min(r[0], lo), max(r[1], hi)]
        return x


class ActQuant:
    """Fake-quantises every site with the (scale, zero point) of its calibrated range at ``bits``, in place
    (``forward`` hands over tensors it owns)."""

    def __init__(self, ranges: dict, bits: int):
        self.bits = bits
        self.params = {site: act_qparams(lo, hi, bits) for site, (lo, hi) in ranges.items()}

    def __call__(self, site: str, x: torch.Tensor) -> torch.Tensor:
        scale, zp = self.params[site]
        return fake_quant(x, scale, zp, self.bits, inplace=True)


def no_quant(site: str, x: torch.Tensor) -> torch.Tensor:
    return x


# ---------------------------------------------------------------------------------------------
# the model


def check_supported(model: nn.Module) -> None:
    """Raise ValueError naming what this quantiser cannot run (it supports DeiT-style timm ViTs)."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention, Block

    check_model(model)
    if getattr(model, "rope", None) is not None:
        raise ValueError(f"{type(model).__name__}: rotary position embedding (the quantiser's forward has no rotary "
                         "terms; the inverter supports it)")
    bad = []
    if getattr(model, "dist_token", None) is not None:
        bad.append("a distillation token (distilled DeiT: only a class token is supported)")
    elif getattr(model, "reg_token", None) is not None or model.num_prefix_tokens != 1:
        bad.append("register tokens (only a class token is supported)")
    if model.no_embed_class:
        bad.append("no_embed_class=True (the position embedding must cover the class token)")
    if model.pos_embed is None:
        bad.append("no absolute position embedding")
    for name in ("norm_pre", "fc_norm"):
        if not isinstance(getattr(model, name), nn.Identity):
            bad.append(f"a {name} layer")
    if not isinstance(model.patch_embed.norm, nn.Identity):
        bad.append("a patch-embedding norm")
    if model.global_pool != "token" or getattr(model, "attn_pool", None) is not None:
        bad.append(f"global_pool={model.global_pool!r} (the CLS token must feed the head)")
    if not isinstance(model.head, nn.Linear):
        bad.append("no linear head (num_classes=0)")
    for i, blk in enumerate(model.blocks):
        a, m = getattr(blk, "attn", None), getattr(blk, "mlp", None)
        if type(blk) is not Block or type(a) is not Attention or type(m) is not Mlp:
            bad.append(f"block {i} is not timm's pre-norm Block with Attention and Mlp ({type(blk).__name__})")
            break
        if not (isinstance(blk.ls1, nn.Identity) and isinstance(blk.ls2, nn.Identity)):
            bad.append(f"block {i} has LayerScale")
        if not isinstance(a.norm, nn.Identity) or getattr(a, "gate", None) is not None:
            bad.append(f"block {i} attention has a scale norm or a gate")
        if not isinstance(m.norm, nn.Identity) or not isinstance(m.act, nn.GELU):
            bad.append(f"block {i} MLP has a hidden norm or a non-GELU activation ({type(m.act).__name__})")
    if bad:
        raise ValueError("; ".join(dict.fromkeys(bad)))


def weight_layers(model: nn.Module) -> list[str]:
    names = ["patch_embed.proj"]
    for i in range(len(model.blocks)):
        names += [f"blocks.{i}.attn.qkv", f"blocks.{i}.attn.proj", f"blocks.{i}.mlp.fc1", f"blocks.{i}.mlp.fc2"]
    return names + ["head"]


def activation_sites(model: nn.Module) -> list[str]:
    sites = ["input", "patch_embed", "cls_concat", "pos_embed", "pos_sum"]
    for i in range(len(model.blocks)):
        sites += [f"blocks.{i}.{s}" for s in ("norm1", "attn.qkv", "attn.logits", "attn.av", "attn.proj", "res1",
                                              "norm2", "mlp.gelu", "mlp.fc2", "res2")]
    return sites + ["norm_cls", "logits"]


def layer_weights(model: nn.Module, bits: int | None) -> dict[str, torch.Tensor]:
    """Weight matrices ([out, in]; the patch projection flattened) of every quantised layer,
    fake-quantised at ``bits`` (None: float)."""
    mods = dict(model.named_modules())
    out = {}
    for name in weight_layers(model):
        w = mods[name].weight.detach()
        w = w.reshape(w.shape[0], -1)
        out[name] = w if bits is None else quantize_weight(w, bits)[0]
    return out


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` ([B, K]) of ``t`` ([B, N, D])."""
    return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def _gather_pos(pos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """CLS's position plus the positions of the patches ``idx``: [B, 1 + K, D]."""
    B = idx.shape[0]
    return torch.cat([pos[:, :1].expand(B, -1, -1), _take(pos[:, 1:].expand(B, -1, -1), idx)], dim=1)


def _block(blk: nn.Module, name: str, W: dict, act, x: torch.Tensor) -> torch.Tensor:
    a, mlp = blk.attn, blk.mlp
    B, T, _ = x.shape
    h = act(f"{name}.norm1", blk.norm1(x))
    qkv = act(f"{name}.attn.qkv", F.linear(h, W[f"{name}.attn.qkv"], a.qkv.bias))
    q, k, v = qkv.view(B, T, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = a.q_norm(q), a.k_norm(k)
    s = act(f"{name}.attn.logits", torch.matmul(q, k.transpose(-2, -1)).mul_(a.scale))
    o = torch.matmul(s.softmax(-1), v).transpose(1, 2).reshape(B, T, a.num_heads * a.head_dim)
    o = act(f"{name}.attn.proj", F.linear(act(f"{name}.attn.av", o), W[f"{name}.attn.proj"], a.proj.bias))
    x = act(f"{name}.res1", o.add_(x))
    h = act(f"{name}.norm2", blk.norm2(x))
    h = act(f"{name}.mlp.gelu", mlp.act(F.linear(h, W[f"{name}.mlp.fc1"], mlp.fc1.bias)))
    h = act(f"{name}.mlp.fc2", F.linear(h, W[f"{name}.mlp.fc2"], mlp.fc2.bias))
    return act(f"{name}.res2", h.add_(x))


def forward(model: nn.Module, W: dict, act, x: torch.Tensor, idx: torch.Tensor | None = None,
            pre_gather: str = "sparse") -> torch.Tensor:
    """Logits of ``model`` with the weight matrices ``W`` (see ``layer_weights``) and every activation
    site passed through ``act(site, tensor)`` (an Observer, an ActQuant or ``no_quant``; it may work in
    place: every tensor handed to it is owned by this forward).

    ``idx`` ([B, K] patch indices): feed CLS plus those patches only; ``pre_gather`` says whether the
    sites before the gather see the kept patches only (sparse) or every patch (dense)."""
    B = x.shape[0]
    w_pe, b_pe = W["patch_embed.proj"], model.patch_embed.proj.bias
    p = patch_size(model)
    dense = idx is None or pre_gather == "dense"
    if dense:
        tokens = act("patch_embed", F.linear(patchify(act("input", x.clone()), p), w_pe, b_pe))
        tokens = tokens if idx is None else _take(tokens, idx)
    else:
        tokens = act("patch_embed", F.linear(act("input", _take(patchify(x, p), idx)), w_pe, b_pe))
    h = act("cls_concat", torch.cat([model.cls_token.expand(B, -1, -1), tokens], dim=1))
    if dense:
        pos = act("pos_embed", model.pos_embed.detach().clone())
        pos = pos if idx is None else _gather_pos(pos, idx)
    else:
        pos = act("pos_embed", _gather_pos(model.pos_embed, idx))
    h = act("pos_sum", h.add_(pos))
    for i, blk in enumerate(model.blocks):
        h = _block(blk, f"blocks.{i}", W, act, h)
    c = act("norm_cls", model.norm(h[:, 0]))
    return act("logits", F.linear(c, W["head"], model.head.bias))


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor, masks: torch.Tensor | None = None, pre_gather: str = "sparse",
              batch: int = 512) -> dict[str, list[float]]:
    """Ranges {site: [min, max]} of one float forward of the normalised images ``x``: dense when
    ``masks`` is None, else sparse, one forward per mask size (and at most ``batch`` images)."""
    obs = Observer()
    W = layer_weights(model, None)
    if masks is None:
        for i in range(0, len(x), batch):
            forward(model, W, obs, x[i:i + batch])
        return obs.ranges
    ks = masks.sum(1)
    for k in sorted(set(ks.tolist())):
        sel = torch.nonzero(ks == k).flatten()
        for i in range(0, len(sel), batch):
            b = sel[i:i + batch]
            forward(model, W, obs, x[b], mask_to_index(masks[b]), pre_gather)
    return obs.ranges


class QuantViT:
    """A fake-quantised ViT: weights at ``w_bits`` (dequantised once), activations at ``a_bits`` from
    calibrated ``ranges``; ``qvit(x)`` gives the dense logits, ``chunk`` images per forward."""

    def __init__(self, model: nn.Module, ranges: dict, w_bits: int, a_bits: int, weights: dict | None = None,
                 chunk: int | None = None):
        self.model, self.chunk = model, chunk
        self.W = weights if weights is not None else layer_weights(model, w_bits)
        self.act = ActQuant(ranges, a_bits)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return chunked(lambda c: forward(self.model, self.W, self.act, c), x, self.chunk)


def chunked(fn, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``fn`` over ``chunk`` rows of ``x`` at a time (on a CPU the activations of 128 images of a small ViT
    stay in cache: a 10k-image W8A8 evaluation of vit_pico_patch4_28 on one thread took 4.7 s, 6.0 s at 512)."""
    if chunk is None or len(x) <= chunk:
        return fn(x)
    return torch.cat([fn(c) for c in x.split(chunk)])
