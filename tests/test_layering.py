"""The package's layers, read from the source: each folder imports only the folders below it, the
core imports nothing but itself, the errors and the value checks, no command module imports another,
and the workflow's rules import only pri.workflow (and the error type)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pri.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parent.parent
PRI = ROOT / "pri"

# the layers, lowest first: a module may import its own layer and any lower one
LAYERS = [{"errors", "checks"}, {"core"}, {"options"}, {"files"}, {"measure"}, {"tasks"}, {"cli", "__main__"},
          {"workflow"}]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def part_of(module: str) -> str:
    """pri.files.io -> files; pri.checks -> checks."""
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    """Every pri module a file imports (at the top or inside a function), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; pri imports by absolute name (from pri.x.y import z)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pri":
            if node.module == "pri":
                found |= {f"pri.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pri"}
    return found


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_of(p): imports_of(p) for p in sorted(PRI.rglob("*.py"))}


def test_every_module_lives_in_a_known_layer():
    unknown = sorted(m for m in MODULES if m != "pri" and part_of(m) not in RANK)
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "pri"))
def test_a_module_imports_only_its_own_folder_and_lower_layers(module):
    mine = part_of(module)
    upward = sorted(i for i in MODULES[module] if RANK[part_of(i)] > RANK[mine])
    assert not upward, f"{module} imports {upward}, from a layer above its own ({mine})"


def test_the_core_imports_only_itself_the_errors_and_the_checks():
    for module, imported in MODULES.items():
        if module.startswith("pri.core"):
            outside = sorted(i for i in imported if part_of(i) not in ("core", "errors", "checks"))
            assert not outside, f"{module} imports {outside}: the core must read on its own"
    assert MODULES["pri.checks"] <= {"pri.errors"} and not MODULES["pri.errors"]


def test_no_command_imports_another():
    commands = {mod for mod, _ in SUBCOMMANDS.values()}
    assert commands <= set(MODULES), commands - set(MODULES)
    for mod in commands:
        others = sorted(MODULES[mod] & (commands - {mod}))
        assert not others, f"{mod} imports the command module(s) {others}: move what they share below them"


def test_rules_import_only_the_workflow_side():
    rules = [ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk"))]
    assert len(rules) > 3
    for path in rules:
        for name in re.findall(r"^\s*(?:from|import)\s+(pri[\w.]*)", path.read_text(), re.M):
            assert name.startswith("pri.workflow") or name == "pri.errors", (
                f"{path.name} imports {name}: rules read pri only through pri.workflow (and catch pri.errors)")


def test_the_checker_catches_an_upward_import(tmp_path):
    """The assay: a core module that imported a task would be caught."""
    bad = tmp_path / "engine.py"
    bad.write_text("from pri.tasks.distill import run\nimport pri.files.io\n")
    imported = imports_of(bad)
    assert imported == {"pri.tasks.distill", "pri.files.io"}
    assert [i for i in imported if RANK[part_of(i)] > RANK["core"]]
