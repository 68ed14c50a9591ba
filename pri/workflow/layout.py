"""Where a run's files live: every path template of the workflow, defined once.

The Snakemake rules take their outputs from :func:`paths`, and the analysis reads the wildcard
values of a result back from its path with :func:`parse` on the same template.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

TEMPLATES = {
    "teacher_ckpt": "teachers/{teacher}/teacher.pt",
    "teacher_metrics": "teachers/{teacher}/teacher.json",
    "pool": "pools/{teacher}/{sweep}/{tag}/seed{seed}/batch{batch}.pt",
    "distill": "distill/{teacher}/{sweep}/{tag}/seed{seed}.json",
    "quantize": "quantize/{teacher}/{sweep}/{tag}/seed{seed}.json",
    "quantize_baseline": "quantize/{teacher}/baseline/{calibration}.json",
    "efficiency": "efficiency/{model}/{what}.json",
    "analysis": "analysis",
    "log_teacher": "logs/teacher/{teacher}.log",
    "log_invert": "logs/invert/{teacher}/{sweep}/seed{seed}_batch{batch}.log",
    "log_distill": "logs/distill/{teacher}/{sweep}/seed{seed}.log",
    "log_quantize": "logs/quantize/{teacher}/main/seed{seed}.log",
    "log_quantize_baseline": "logs/quantize/{teacher}/baselines.log",
    "log_efficiency": "logs/efficiency/{model}_{what}.log",
    "log_analysis": "logs/analysis.log",
}

# what a wildcard may hold (the workflow's global wildcard constraints, and parse's groups)
PATTERNS = {
    "teacher": r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    "sweep": r"[A-Za-z0-9][A-Za-z0-9_-]*",
    "tag": r"[a-z][a-z0-9_]*",
    "seed": r"\d+",
    "batch": r"\d+",
    "model": r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    "what": r"flops|time",
    "calibration": r"fp|noise|real",
}


# The kinds of sweep and how their names are written (a folder of pools/ and distill/): ``main`` (the
# methods of inversion.methods), ``iso<B>`` (each method at the inversion compute of B DMI images),
# ``class<C>`` (one-class inversion of class C). The workflow has one inversion and one distillation
# rule per kind.
SWEEP_KINDS = {"main": "main", "iso": "iso", "oneclass": "class"}  # kind -> the prefix of its sweeps' names


def sweep_name(kind: str, value=None) -> str:
    """The name of a sweep: main, iso<B>, class<C>."""
    return "main" if kind == "main" else f"{SWEEP_KINDS[kind]}{value}"


def sweep_kind(name: str) -> str:
    """The kind of a sweep from its name (the inverse of sweep_name)."""
    return next((k for k, prefix in SWEEP_KINDS.items() if k != "main" and name.startswith(prefix)), "main")


def paths(run: str, root: str = "results") -> SimpleNamespace:
    """The templates of run ``run`` (``results/<run>/...``), wildcards left in."""
    return SimpleNamespace(root=f"{root}/{run}", **{k: f"{root}/{run}/{v}" for k, v in TEMPLATES.items()})


def _regex(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(f"(?P<{m[1]}>{PATTERNS[m[1]]})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("(?:^|/)" + "".join(out) + "$")


def parse(kind: str, path: str) -> dict:
    """The wildcard values of a file of ``kind`` (a key of TEMPLATES) from its path (any prefix);
    seeds and batches as int. Raises ValueError for a path that does not fit."""
    m = _regex(TEMPLATES[kind]).search(str(path).replace("\\", "/"))
    if m is None:
        raise ValueError(f"{path} is not a {kind} file of the suite's layout ({TEMPLATES[kind]})")
    return {k: int(v) if k in ("seed", "batch") else v for k, v in m.groupdict().items()}
