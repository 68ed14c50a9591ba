"""Every output of ``python -m analysis``, named once: the rule (workflow/rules/analysis.smk)
declares these files, the entry point writes them, and the tests compare runs by them.

``measured_files()`` names the outputs that show measured time or memory (wall-clock seconds, speed-ups,
peak memory) and hence differ between two runs of the same work; every other output is a function
of the results' content and is byte-identical between such runs. The seconds themselves are in the
``timing`` table (and beside each result, in its ``<file>.timing.json``)."""
from __future__ import annotations

VERDICTS = "1 Verdicts"
# table name -> report category. Categories are numbered because the report orders them by name:
# the verdicts first, then the claims' forest plot, then the rest.
TABLES = {
    "verdicts": VERDICTS,
    "claims": "2 Claims",
    "differences": "2 Claims",
    "power": "2 Claims",
    "accuracy": "3 Accuracy",
    "variance": "3 Accuracy",
    "compute": "4 Controls",
    "quantization": "5 Quantisation",
    "efficiency": "6 Efficiency",
    "theorem1": "6 Efficiency",
    "timing": "6 Efficiency",
    "teachers": "8 Provenance",
    "versions": "8 Provenance",
    "skipped": "8 Provenance",
}
PLOTS = {
    "forest": "2 Claims",
    "forest_controls": "2 Claims",
    "forest_efficiency": "2 Claims",
    "accuracy_vs_sparsity": "3 Accuracy",
    "update_counts": "4 Controls",
    "accuracy_vs_compute": "4 Controls",
    "quantization": "5 Quantisation",
    "flops": "6 Efficiency",
    "speedup": "6 Efficiency",
    "active_tokens": "6 Efficiency",
    "synthetic_grid": "7 Synthetic images",
    "pri_stages": "7 Synthetic images",
}
TIDY = ("distill", "pools", "quantize")  # <name>_tidy.csv: one row per observation
TABLE_FORMATS = ("csv", "md", "html")

# What shows measured time or memory: claim 1 (speed) and 2b (peak memory) sit in the claims and
# verdict tables and the efficiency forest; the compute control's x axis is measured seconds.
MEASURED_TABLES = ("verdicts", "claims", "compute", "theorem1", "timing")
MEASURED_PLOTS = ("forest_efficiency", "accuracy_vs_compute", "speedup")


def table_files(name: str) -> list[str]:
    """A table's files, relative to the analysis folder."""
    return [f"tables/{name}.{ext}" for ext in TABLE_FORMATS]


def plot_file(name: str) -> str:
    return f"plots/{name}.png"


def all_files() -> list[str]:
    """Every file the analysis writes, relative to its folder."""
    return (["claims.csv"] + [f"{n}_tidy.csv" for n in TIDY] + [f for n in TABLES for f in table_files(n)]
            + [plot_file(n) for n in PLOTS])


def measured_files() -> list[str]:
    """The files among all_files() that show measured time or memory."""
    return (["claims.csv"] + [f for n in MEASURED_TABLES for f in table_files(n)]
            + [plot_file(n) for n in MEASURED_PLOTS])
