"""The analysis's output list (analysis/outputs.py) is the one the entry point writes, the rule
declares and the report captions: checked here without running the workflow."""
from __future__ import annotations

import re
from pathlib import Path

from analysis import outputs
from analysis.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def _written(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_the_entry_point_writes_exactly_the_listed_outputs(tmp_path):
    """Even a run with nothing to analyse writes every listed file (placeholders saying why), and
    nothing else: Snakemake would otherwise miss an output or keep an unlisted one."""
    out = tmp_path / "analysis"
    rc = main(["--out", str(out), "--missing", "[]", "--claims-config", "{}", "--data", "{}", "--teachers",
               "--distill", "--pools", "--efficiency", "--quantize"])
    assert rc == 0
    assert _written(out) == set(outputs.all_files())
    assert set(outputs.measured_files()) < set(outputs.all_files())
    assert "not run" in (out / "tables" / "verdicts.md").read_text()


def test_every_table_and_plot_has_a_report_caption_and_a_category():
    captions = {p.stem for p in (ROOT / "workflow" / "report").glob("*.rst")}
    for name in [*outputs.TABLES, *outputs.PLOTS]:
        assert name in captions, f"workflow/report/{name}.rst is missing: the report needs a caption"
    categories = set(outputs.TABLES.values()) | set(outputs.PLOTS.values())
    assert all(re.match(r"^\d ", c) for c in categories), categories  # numbered: the report orders by name


def test_the_rule_takes_its_outputs_from_the_list():
    """analysis.smk names no table or plot itself: it imports the list."""
    rule = (ROOT / "workflow" / "rules" / "analysis.smk").read_text()
    assert "from analysis.outputs import" in rule
    for name in [*outputs.TABLES, *outputs.PLOTS]:
        assert not re.search(rf"(tables|plots)/{re.escape(name)}\.", rule), f"{name} is named in analysis.smk"
