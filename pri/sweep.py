"""Method tags of a sweep: one name per schedule, shared by the workflow, the efficiency
track and the analysis.

Tags: ``dmi``; ``smi_default`` (SMI's public schedule, prune iterations scaled to T);
``smi_v{v}`` (SMI at PRI's sparsity 1 - 1/v: ratios solving (1-r)^4 = 1/v); ``pri_v{v}``;
``pri_random_v{v}`` (PRI with random patch selection, the Re-Birth ablation).
"""
from __future__ import annotations

from .schedules import SMI_PUBLIC_RATIO, make_schedule, matched_ratio, scaled_prune_at


def method_specs(methods: dict, iterations: int) -> dict[str, dict]:
    """tag -> spec (method, v, prune_at, prune_ratio, score, family, nominal sparsity)."""
    specs: dict[str, dict] = {}
    prune_at = scaled_prune_at(iterations)
    if methods.get("dmi", True):
        specs["dmi"] = dict(method="dmi", family="DMI", v=None, score="none", nominal_sparsity=0.0)
    if methods.get("smi_default", True):
        specs["smi_default"] = dict(method="smi", family="SMI (default)", v=None, score="cls_attn",
                                    prune_at=prune_at, prune_ratio=[SMI_PUBLIC_RATIO] * len(prune_at),
                                    nominal_sparsity=1 - (1 - SMI_PUBLIC_RATIO) ** len(prune_at))
    for v in methods.get("smi_matched", []) or []:
        r = round(matched_ratio(v, len(prune_at)), 4)
        specs[f"smi_v{v}"] = dict(method="smi", family="SMI (matched)", v=v, score="cls_attn", prune_at=prune_at,
                                  prune_ratio=[r] * len(prune_at), nominal_sparsity=1 - 1 / v)
    for v in methods.get("pri", []) or []:
        specs[f"pri_v{v}"] = dict(method="pri", family="PRI", v=v, score="cls_attn", nominal_sparsity=1 - 1 / v)
    for v in methods.get("pri_random", []) or []:
        specs[f"pri_random_v{v}"] = dict(method="pri", family="PRI (random)", v=v, score="random",
                                         nominal_sparsity=1 - 1 / v)
    return specs


def schedule_of(spec: dict):
    return make_schedule(spec["method"], v=spec.get("v") if spec["method"] == "pri" else None,
                         prune_at=spec.get("prune_at"), prune_ratio=spec.get("prune_ratio"),
                         score=spec.get("score") if spec["method"] != "dmi" else "cls_attn")


def cli_args(spec: dict) -> str:
    """The schedule options of ``pri invert`` / ``pri efficiency`` for a spec."""
    args = [f"--method {spec['method']}"]
    if spec["method"] == "pri":
        args.append(f"--v {spec['v']}")
    if spec["method"] == "smi":
        args.append("--prune-at " + " ".join(str(p) for p in spec["prune_at"]))
        args.append("--prune-ratio " + " ".join(str(r) for r in spec["prune_ratio"]))
    if spec["method"] != "dmi":
        args.append(f"--score {spec['score']}")
    return " ".join(args)
