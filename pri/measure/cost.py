"""Analytic cost model: multiply-accumulates (MACs) per image of a ViT, per inversion step and
per generated image of a schedule.

Forward at ``n`` active patches (``t = n + P`` tokens, ``P`` prefix tokens: CLS and registers),
per image, in the groups that the fvcore count in pri/measure/flops.py reports as well:

- ``patch_embed``: only the active patches are embedded: ``n * C * p * p * D``;
- ``attn_proj`` (per block): ``t * (D * 3A + A * D)`` for qkv and proj, ``= 4 t D^2`` when the
  attention width A equals D;
- ``attn_matmul`` (per block): ``Q K^T`` and ``A V``: ``2 t^2 A``;
- ``mlp`` (per block): ``2 t D H`` with the model's real hidden width H (``8 t D^2`` for ratio 4);
- ``head``: ``D * classes`` (the CLS token only);
- ``other``: LayerNorms, at fvcore's convention of 5 MACs per element (4 without affine).
  GELU, softmax and residual adds are not counted, neither here nor by fvcore.

A score forward (SMI and PRI read the last block's CLS-row attention on an un-augmented pass)
adds to a forward: the block's norm1 and qkv again (``cls_attention_row`` recomputes them) and
``q_cls K^T`` (``t * A``).

Inversion step. The teacher is frozen, so the backward pass computes input gradients only,
never weight gradients. ``backward="convention"`` (the default, docs/methods.md and the paper): a
step costs 2x a forward in every group. ``backward="exact"`` counts the backward per operator:
a linear layer needs one product for the input gradient (2x), but both operands of ``Q K^T``
and ``A V`` are activations, so the attention matmuls need two (3x; a fused flash backward
also recomputes ``Q K^T``, which is not counted). Ratios between methods move by < 1 %.

Cost of a method per generated image: the sum over iterations ``t`` of the step at the
schedule's active count ``n_t``, plus one score forward at each event where the schedule reads
scores, divided by the images each trajectory outputs (PRI: ``v``). Everything is per
trajectory, so the batch does not enter.

The paper's idealised comparison uses ``SMI*``, which prunes at step 0 straight to its final
count (:class:`IdealSMI`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pri.core.schedules import (DMI, PRI, SMI, SMI_PUBLIC_T, IdealSMI, Schedule, Spec, scaled_prune_at,
                                standard_tags)
from pri.errors import PriError

GROUPS = ("patch_embed", "attn_proj", "attn_matmul", "mlp", "head", "other")
COMPARED = ("patch_embed", "attn_proj", "attn_matmul", "mlp", "head")  # what fvcore and this model share
IDEAL = ("attn_proj", "attn_matmul", "mlp")  # "attention + MLP only" (docs/methods.md)
BACKWARD = ("convention", "exact")
PAPER_T = SMI_PUBLIC_T  # 4000


# --------------------------------------------------------------------------- model dimensions
@dataclass(frozen=True)
class ModelDims:
    """What the cost of a timm VisionTransformer depends on."""
    name: str
    num_patches: int  # N
    prefix: int  # prefix tokens (CLS + registers)
    embed_dim: int  # D
    depth: int  # L
    num_heads: int
    attn_dim: int  # A (= D in every DeiT)
    mlp_hidden: int  # H (= 4 D in every DeiT)
    in_chans: int
    patch: int
    num_classes: int
    ln_token: float = 0.0  # LayerNorm MACs per token per block (norm1, norm2, ...), fvcore's convention
    ln_global: float = 0.0  # LayerNorm MACs per token outside the blocks (norm_pre, final norm)
    ln_patch: float = 0.0  # LayerNorm MACs per patch token in the patch embedding
    ln_pooled: float = 0.0  # LayerNorm MACs on the pooled token (fc_norm)
    ln_score: float = 0.0  # norm1 recomputed by the score forward, per token

    @property
    def n_over_d(self) -> float:
        return self.num_patches / self.embed_dim

    @classmethod
    def from_model(cls, model: nn.Module, name: str | None = None) -> "ModelDims":
        from pri.core.vit import check_model, num_patches, patch_size

        check_model(model)
        blk = model.blocks[0]
        attn, mlp = blk.attn, blk.mlp

        def ln(m) -> float:
            if isinstance(m, nn.LayerNorm):
                feats = 1
                for s in m.normalized_shape:
                    feats *= int(s)
                return feats * (5 if m.weight is not None else 4)
            return 0.0

        # per-token LayerNorm cost inside one block (all blocks alike in a timm ViT)
        ln_tok = ln(blk.norm1) + ln(blk.norm2) + ln(getattr(attn, "norm", None)) + ln(getattr(mlp, "norm", None))
        return cls(
            name=name or type(model).__name__,
            num_patches=num_patches(model),
            prefix=int(model.num_prefix_tokens),
            embed_dim=int(model.embed_dim),
            depth=len(model.blocks),
            num_heads=int(attn.num_heads),
            attn_dim=int(attn.qkv.out_features // 3),
            mlp_hidden=int(mlp.fc1.out_features),
            in_chans=int(model.patch_embed.proj.in_channels),
            patch=patch_size(model),
            num_classes=int(model.num_classes),
            ln_token=ln_tok,
            ln_global=ln(model.norm_pre) + ln(model.norm),
            ln_patch=ln(getattr(model.patch_embed, "norm", None)),
            ln_pooled=ln(getattr(model, "fc_norm", None)),
            ln_score=ln(blk.norm1),
        )

    @classmethod
    def from_name(cls, name: str, img_size: int | None = None, num_classes: int | None = None) -> "ModelDims":
        from pri.files.models import build_model

        with torch.device("meta"):  # shapes only: no weight initialisation (seconds for DeiT-B)
            model = build_model(name, num_classes=num_classes, img_size=img_size)
        return cls.from_model(model, name)


_DIMS_CACHE: dict = {}


def dims_of(model_or_name, img_size: int | None = None, num_classes: int | None = None) -> ModelDims:
    """ModelDims of a model instance or a model name (names are built once and cached)."""
    if isinstance(model_or_name, ModelDims):
        return model_or_name
    if isinstance(model_or_name, nn.Module):
        return ModelDims.from_model(model_or_name)
    key = (model_or_name, img_size, num_classes)
    if key not in _DIMS_CACHE:
        _DIMS_CACHE[key] = ModelDims.from_name(model_or_name, img_size=img_size, num_classes=num_classes)
    return _DIMS_CACHE[key]


# --------------------------------------------------------------------------- forward and step
def forward_macs(d: ModelDims, n: int, score: bool = False, prefix: bool = True) -> dict:
    """MACs of one image's forward at ``n`` active patches, by group.

    ``score``: the score forward (adds the recomputed qkv/norm1 and ``q_cls K^T`` of one block).
    ``prefix=False`` counts patch tokens only (no CLS): the convention of the paper's figures.
    """
    if n <= 0:
        return {g: 0 for g in GROUPS}
    t = n + (d.prefix if prefix else 0)
    D, A, H, L = d.embed_dim, d.attn_dim, d.mlp_hidden, d.depth
    out = {
        "patch_embed": n * d.in_chans * d.patch * d.patch * D,
        "attn_proj": L * t * (3 * D * A + A * D),
        "attn_matmul": L * 2 * t * t * A,
        "mlp": L * 2 * t * D * H,
        "head": D * d.num_classes,
        "other": L * t * d.ln_token + t * d.ln_global + n * d.ln_patch + d.ln_pooled,
    }
    if score:
        out["attn_proj"] += t * 3 * D * A
        out["attn_matmul"] += t * A
        out["other"] += t * d.ln_score
    return {k: int(round(v)) for k, v in out.items()}


def step_factors(backward: str = "convention") -> dict:
    """MACs of one inversion step (forward + input-gradient backward) over one forward, by group."""
    if backward == "convention":
        return {g: 2.0 for g in GROUPS}
    if backward == "exact":
        return {g: (3.0 if g == "attn_matmul" else 2.0) for g in GROUPS}
    raise PriError("--backward", f"unknown backward accounting {backward!r}: choose {' or '.join(BACKWARD)}")


def step_macs(d: ModelDims, n: int, backward: str = "convention", prefix: bool = True) -> dict:
    f = forward_macs(d, n, prefix=prefix)
    k = step_factors(backward)
    return {g: int(round(f[g] * k[g])) for g in GROUPS}


# --------------------------------------------------------------------------- schedules
def standard_schedules(n: int, iterations: int = PAPER_T, vs=(2, 4, 7), random: bool = True,
                       matched: bool = True, ideal: bool = True) -> dict:
    """``{tag: schedule}`` of :func:`pri.core.schedules.standard_tags` that fit ``n`` patches and ``iterations``
    (SMI's tags only where its scaled prune iterations exist)."""
    vs = [v for v in vs if v <= n and v <= iterations]
    smi_ok = bool(scaled_prune_at(iterations))
    out = {}
    for tag in standard_tags(vs, random=random, matched=matched and smi_ok, ideal=ideal):
        if not smi_ok and Spec.parse(tag).name in ("smi_default", "smi_star") and Spec.parse(tag).v is None:
            continue
        out[tag] = Spec.parse(tag).build(n, iterations)
    return out


def schedule_profile(schedule: Schedule, n: int, iterations: int) -> dict:
    """Iterations spent at each active count, and the counts at which score forwards run.

    Returns ``{"steps": {count: iterations}, "scores": {count: forwards}, "events": [...],
    "images_per_trajectory": ...}``; count 0 (PRI after t_v) is left out."""
    counts = schedule.active_counts(n, iterations)
    steps = Counter(c for c in counts if c > 0)
    scores: Counter = Counter()
    events = []
    for t in schedule.event_iterations(iterations, n):
        before = counts[t - 1] if t > 0 else n
        need = schedule.needs_score(t)
        seen = schedule.scored(t, before, n)
        events.append({"iteration": int(t), "active_before": int(before), "score_forward": bool(need),
                       "scored": int(seen), "active_after": int(counts[t]) if t < len(counts) else 0})
        if need:
            scores[seen] += 1
    return {"steps": dict(sorted(steps.items(), reverse=True)), "scores": dict(sorted(scores.items(), reverse=True)),
            "events": events, "images_per_trajectory": schedule.images_per_trajectory()}


def integrate(profile: dict, step_fn, score_fn=None) -> dict:
    """Per generated image: sum of ``step_fn(n)`` over the profile's iterations plus
    ``score_fn(n)`` at its score events, divided by images per trajectory. ``step_fn`` and
    ``score_fn`` return dicts by group (MACs or seconds)."""
    tot: dict = {}
    for n, it in profile["steps"].items():
        for g, v in step_fn(n).items():
            tot[g] = tot.get(g, 0) + v * it
    if score_fn is not None:
        for n, k in profile["scores"].items():
            for g, v in score_fn(n).items():
                tot[g] = tot.get(g, 0) + v * k
    ipt = profile["images_per_trajectory"]
    return {g: v / ipt for g, v in tot.items()}


def schedule_cost(model, schedule: Schedule, iterations: int = PAPER_T, backward: str = "convention",
                  scores: bool = True, prefix: bool = True) -> dict:
    """Analytic MACs per generated image of ``schedule`` on ``model`` (a ModelDims, model or name)."""
    d = dims_of(model)
    prof = schedule_profile(schedule, d.num_patches, iterations)
    k = step_factors(backward)

    def score_fn(n):
        # a score forward is a forward under no_grad, replacing no step
        return forward_macs(d, n, score=True, prefix=prefix)

    per = integrate(prof, lambda n: step_macs(d, n, backward, prefix=prefix), score_fn if scores else None)
    per = {g: per.get(g, 0.0) for g in GROUPS}
    step_only = integrate(prof, lambda n: step_macs(d, n, backward, prefix=prefix))
    return {
        "macs_per_image": per,
        "total": sum(per.values()),
        "compared": sum(per[g] for g in COMPARED),
        "ideal": sum(step_only.get(g, 0.0) for g in IDEAL),
        "score_macs_per_image": sum(per.values()) - sum(step_only.values()),
        "backward": backward,
        "step_factor": k,
        "profile": prof,
        "mean_active": _mean_active(prof),
    }


def _mean_active(prof) -> float:
    it = sum(prof["steps"].values())
    return sum(n * i for n, i in prof["steps"].items()) / it if it else 0.0


def ideal_cost(d: ModelDims, schedule: Schedule, iterations: int = PAPER_T, prefix: bool = True) -> float:
    """Attention + MLP MACs per generated image, steps only (the paper's idealisation)."""
    prof = schedule_profile(schedule, d.num_patches, iterations)
    per = integrate(prof, lambda n: step_macs(d, n, prefix=prefix))
    return sum(per.get(g, 0.0) for g in IDEAL)


def ideal_ratios(model, iterations: int = PAPER_T, vs=(2, 4, 7), prefix: bool = True) -> dict:
    """DMI / PRI(v) and SMI(default) / PRI(v), attention + MLP only, per image."""
    d = dims_of(model)
    n = d.num_patches
    dmi = ideal_cost(d, DMI(), iterations, prefix)
    smi = ideal_cost(d, SMI(scaled_prune_at(iterations)), iterations, prefix)
    out = {}
    for v in vs:
        pri = ideal_cost(d, PRI(v), iterations, prefix)
        star = ideal_cost(d, IdealSMI(n // v), iterations, prefix)
        out[v] = {"dmi_over_pri": dmi / pri, "smi_over_pri": smi / pri, "smi_star_over_pri": star / pri}
    return out


# --------------------------------------------------------------------------- Theorem 1
def theorem1(model, v: int, iterations: int = PAPER_T, prefix: bool = True) -> dict:
    """Theorem 1 (PRI vs SMI* at the same sparsity, SMI* keeping N // v patches from step 0),
    from the integrals over the actual schedules and from the closed forms.

    MLP: PRI / SMI* = (v + 1) / (2 v) < 1. Self-attention (projections + matmuls): PRI <= SMI*
    iff N / D <= 6 v / (2 v - 1); closed-form ratio ``[2D(v+1) + N(v+1)(2v+1)/(3v)] / [4Dv + 2N]``.
    The integrals count the CLS token and the floor in t_k = k floor(T / v), which the closed
    forms do not, so the ratios differ slightly; the verdicts are what is compared.
    """
    d = dims_of(model)
    n, D = d.num_patches, d.embed_dim
    prof_p = schedule_profile(PRI(v), n, iterations)
    prof_s = schedule_profile(IdealSMI(max(1, n // v)), n, iterations)
    step = lambda m: step_macs(d, m, prefix=prefix)  # noqa: E731
    pri, star = integrate(prof_p, step), integrate(prof_s, step)
    mlp_ratio = pri["mlp"] / star["mlp"]
    attn_pri = pri["attn_proj"] + pri["attn_matmul"]
    attn_star = star["attn_proj"] + star["attn_matmul"]
    attn_ratio = attn_pri / attn_star
    mlp_closed = (v + 1) / (2 * v)
    attn_closed = (2 * D * (v + 1) + n * (v + 1) * (2 * v + 1) / (3 * v)) / (4 * D * v + 2 * n)
    bound = 6 * v / (2 * v - 1) if v >= 1 else float("inf")
    attn_claim = (n / D) <= bound
    return {
        "model": d.name, "v": v, "iterations": iterations, "N": n, "D": D, "n_over_d": n / D,
        "smi_star_keep": max(1, n // v), "counts_prefix": prefix,
        "mlp_ratio_integral": mlp_ratio, "mlp_ratio_closed": mlp_closed,
        "mlp_holds_integral": mlp_ratio < 1.0, "mlp_holds_closed": mlp_closed < 1.0,
        "mlp_rel_diff": mlp_ratio / mlp_closed - 1.0,
        "attn_ratio_integral": attn_ratio, "attn_ratio_closed": attn_closed,
        "attn_bound": bound, "attn_holds_integral": attn_pri <= attn_star, "attn_holds_closed": attn_claim,
        "attn_rel_diff": attn_ratio / attn_closed - 1.0,
        "verdicts_agree": (mlp_ratio < 1.0) == (mlp_closed < 1.0) and (attn_pri <= attn_star) == attn_claim,
    }


# --------------------------------------------------------------------------- helpers
def dims_dict(d: ModelDims) -> dict:
    return asdict(d)


def speedups(rows, key: str, reference: str = "dmi") -> dict:
    """``{tag: value of the reference tag / value of tag}`` over ``rows`` (dicts with ``tag`` and
    ``key``, one model): how many times cheaper (or faster) each schedule is than DMI per image.
    The suite's one definition of a speed-up; empty without the reference."""
    vals = {r["tag"]: r.get(key) for r in rows}
    ref = vals.get(reference)
    if not ref:
        return {}
    return {t: ref / x for t, x in vals.items() if x}
