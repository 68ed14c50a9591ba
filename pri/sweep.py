"""Method tags of a sweep: one name per schedule, shared by the workflow, the efficiency
track and the analysis.

Tags: ``dmi``; ``smi_default`` (SMI's public schedule, prune iterations scaled to T);
``smi_v{v}`` (SMI at PRI's sparsity 1 - 1/v: ratios solving (1-r)^4 = 1/v); ``pri_v{v}``;
``pri_random_v{v}`` (PRI with random patch selection, the Re-Birth ablation).
"""
from __future__ import annotations

from .errors import PriError
from .schedules import SMI_PUBLIC_RATIO, make_schedule, matched_ratio, scaled_prune_at


def spec_of_tag(tag: str, iterations: int) -> dict:
    """The schedule spec of a tag (method, v, prune_at, prune_ratio, score, family, nominal sparsity)."""
    prune_at = scaled_prune_at(iterations)
    if tag == "dmi":
        return dict(method="dmi", family="DMI", v=None, score="none", nominal_sparsity=0.0)
    if tag == "smi_default":
        return dict(method="smi", family="SMI (default)", v=None, score="cls_attn", prune_at=prune_at,
                    prune_ratio=[SMI_PUBLIC_RATIO] * len(prune_at),
                    nominal_sparsity=1 - (1 - SMI_PUBLIC_RATIO) ** len(prune_at))
    for prefix, family in (("smi_v", "SMI (matched)"), ("pri_random_v", "PRI (random)"), ("pri_v", "PRI")):
        if tag.startswith(prefix) and tag[len(prefix):].isdigit():
            v = int(tag[len(prefix):])
            spec = dict(family=family, v=v, nominal_sparsity=1 - 1 / v)
            if prefix == "smi_v":
                r = round(matched_ratio(v, len(prune_at)), 4)
                return dict(spec, method="smi", score="cls_attn", prune_at=prune_at, prune_ratio=[r] * len(prune_at))
            return dict(spec, method="pri", score="random" if prefix == "pri_random_v" else "cls_attn")
    raise PriError("--schedules", f"unknown method tag {tag!r}: use dmi, smi_default, smi_v<V>, pri_v<V> or "
                   "pri_random_v<V>")


def method_tags(methods: dict) -> list[str]:
    """The tags a config's ``inversion.methods`` asks for, in report order."""
    tags = ["dmi"] if methods.get("dmi", True) else []
    tags += ["smi_default"] if methods.get("smi_default", True) else []
    tags += [f"smi_v{v}" for v in methods.get("smi_matched", []) or []]
    tags += [f"pri_v{v}" for v in methods.get("pri", []) or []]
    tags += [f"pri_random_v{v}" for v in methods.get("pri_random", []) or []]
    return tags


def method_specs(methods: dict, iterations: int) -> dict[str, dict]:
    """tag -> spec for every tag of a config's ``inversion.methods``."""
    return {tag: spec_of_tag(tag, iterations) for tag in method_tags(methods)}


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
