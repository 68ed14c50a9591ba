"""fvcore MAC counts of the token-sparse forward, integrated over a schedule.

fvcore traces the forward (``torch.jit.trace``) and counts MACs per operator. It has no handler
for ``aten::scaled_dot_product_attention``, which timm's fused attention calls, and so silently
counts the attention matmuls as 0: :func:`sdpa_flop_jit` supplies one (``Q K^T`` and ``A V``:
``B * heads * Lq * Lk * (head_dim + value_dim)`` MACs, ``2 B h Lq Lk d`` for equal widths).

The sparse forward is counted once per distinct active count (a module taking the patch index
tensor as an input), and the counts are integrated over a schedule exactly as the analytic
model in pri/measure/cost.py does (same step factor, same score forwards), so the two can be compared
group by group: ``patch_embed``, ``attn_proj``, ``attn_matmul``, ``mlp``, ``head`` and ``other``
(LayerNorm at fvcore's 5 MACs per element). Operators fvcore does not count (GELU, softmax,
adds, ...) are recorded in ``skipped``; fvcore's own warnings about them are silenced.
"""
from __future__ import annotations

import copy
import itertools
import logging
import re
import warnings
from collections import Counter

import torch
from torch import nn

from pri.core.schedules import Schedule
from pri.core.vit import num_patches, sparse_forward
from pri.measure.cost import COMPARED, GROUPS, integrate, schedule_profile, step_factors

SDPA_OP = "aten::scaled_dot_product_attention"
_MATMUL_OPS = {"scaled_dot_product_attention", "matmul", "bmm", "einsum", "baddbmm"}
_LINEAR_OPS = {"linear", "addmm", "mm"}
_CONV_OPS = {"_convolution", "conv2d"}


def _shape(v):
    t = v.type()
    try:
        sizes = t.sizes()
    except RuntimeError:
        sizes = None
    if sizes is None or any(s is None for s in sizes):
        raise ValueError("fvcore: scaled_dot_product_attention input without a complete shape")
    return list(sizes)


def sdpa_flop_jit(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: MACs of ``Q K^T`` and ``A V``.

    query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev]; leading dims (batch, heads)
    multiply. Softmax, scaling and masking are elementwise and not counted (as elsewhere in fvcore).
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    lead = 1
    for s in q[:-2]:
        lead *= int(s)
    lq, e = int(q[-2]), int(q[-1])
    lk, ev = int(k[-2]), int(v[-1])
    return lead * lq * lk * (e + ev)


class SparseForward(nn.Module):
    """``sparse_forward(model, x, idx)`` as a module whose inputs are the image and the index
    tensor, so that fvcore can trace it (the model is the submodule ``model``)."""

    def __init__(self, model: nn.Module, with_score: bool = False, score_layer: int = -1):
        super().__init__()
        self.model = model
        self.with_score = with_score
        self.score_layer = score_layer

    def forward(self, x, idx):
        return sparse_forward(self.model, x, idx, with_score=self.with_score, score_layer=self.score_layer)


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (shapes only, no data copied): tracing it gives
    the same operator shapes, hence the same counts, without running the arithmetic."""
    memo: dict = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        m = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(m, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else m
    return copy.deepcopy(model, memo)


_BLOCK_RE = re.compile(r"^model\.blocks\.(\d+)\.(attn|mlp)$")


def count_forward(model: nn.Module, n: int, batch: int = 1, with_score: bool = False, sdpa_handler: bool = True,
                  score_layer: int = -1) -> dict:
    """fvcore MACs of one sparse forward at ``n`` active patches, per image, by group. The
    forward runs on ``model``'s device (pass :func:`meta_copy` of it to trace without arithmetic).

    Returns ``{"groups": {group: MACs}, "by_operator": {op: MACs}, "skipped": {op: calls}}``
    (per image: the traced batch is divided out)."""
    with warnings.catch_warnings():  # fvcore's import trips torch.jit.script deprecation warnings
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    model = model.eval()
    p = next(model.parameters())
    dev, dt = p.device, p.dtype
    c = int(model.patch_embed.proj.in_channels)
    h, w = (int(s) for s in model.patch_embed.img_size)
    x = torch.zeros(batch, c, h, w, device=dev, dtype=dt)
    total_n = num_patches(model)
    if not 1 <= n <= total_n:
        raise ValueError(f"active count {n} outside [1, {total_n}]")
    idx = torch.arange(n, device=dev).unsqueeze(0).expand(batch, -1).contiguous()
    wrapper = SparseForward(model, with_score=with_score, score_layer=score_layer)
    fca = FlopCountAnalysis(wrapper, (x, idx))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    if sdpa_handler:
        fca.set_op_handle(SDPA_OP, sdpa_flop_jit)
    logger = logging.getLogger("fvcore.nn.jit_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            by_mod = fca.by_module_and_operator()
            skipped = dict(fca.unsupported_ops())
    finally:
        logger.setLevel(level)
    root = Counter(by_mod.get("", {}))
    groups = {g: 0 for g in GROUPS}
    lin_in = {"attn": 0, "mlp": 0}
    for name, ops in by_mod.items():
        m = _BLOCK_RE.match(name)
        if m:
            lin_in[m.group(2)] += sum(v for op, v in ops.items() if op in _LINEAR_OPS)
    head = sum(v for op, v in by_mod.get("model.head", {}).items() if op in _LINEAR_OPS)
    linear_total = sum(v for op, v in root.items() if op in _LINEAR_OPS)
    groups["attn_proj"] = lin_in["attn"]
    groups["mlp"] = lin_in["mlp"]
    groups["head"] = head
    # the patch projection is the only linear layer outside the blocks and the head
    groups["patch_embed"] = linear_total - lin_in["attn"] - lin_in["mlp"] - head
    groups["patch_embed"] += sum(v for op, v in root.items() if op in _CONV_OPS)
    groups["attn_matmul"] = sum(v for op, v in root.items() if op in _MATMUL_OPS)
    groups["other"] = sum(v for op, v in root.items()
                          if op not in _MATMUL_OPS and op not in _LINEAR_OPS and op not in _CONV_OPS)
    per_image = {g: v / batch for g, v in groups.items()}
    return {"groups": per_image, "by_operator": {op: v / batch for op, v in root.items()}, "skipped": skipped,
            "active": n, "with_score": with_score, "sdpa_handler": sdpa_handler}


class FlopCounter:
    """Counts each distinct (active count, score) forward once and caches it; by default on a
    meta-device copy of the model (about 10x faster than tracing with real arithmetic, same counts)."""

    def __init__(self, model: nn.Module, sdpa_handler: bool = True, score_layer: int = -1, meta: bool = True):
        self.model = meta_copy(model) if meta else model
        self.sdpa_handler = sdpa_handler
        self.score_layer = score_layer
        self.cache: dict = {}
        self.skipped: Counter = Counter()

    def forward(self, n: int, score: bool = False) -> dict:
        key = (int(n), bool(score))
        if key not in self.cache:
            r = count_forward(self.model, n, with_score=score, sdpa_handler=self.sdpa_handler,
                              score_layer=self.score_layer)
            self.cache[key] = r
            for op, k in r["skipped"].items():
                self.skipped[op] += k
        return self.cache[key]["groups"]

    def schedule(self, schedule: Schedule, iterations: int, backward: str = "convention") -> dict:
        """fvcore MACs per generated image of ``schedule`` (steps + score forwards), by group."""
        n = num_patches(self.model)
        prof = schedule_profile(schedule, n, iterations)
        k = step_factors(backward)

        def step(m):
            f = self.forward(m)
            return {g: f[g] * k[g] for g in GROUPS}

        per = integrate(prof, step, lambda m: self.forward(m, score=True))
        per = {g: per.get(g, 0.0) for g in GROUPS}
        return {"macs_per_image": per, "total": sum(per.values()), "compared": sum(per[g] for g in COMPARED),
                "backward": backward, "distinct_counts": sorted(prof["steps"], reverse=True),
                "skipped_ops": dict(self.skipped), "sdpa_handler": self.sdpa_handler}
