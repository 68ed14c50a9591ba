"""Every command the README and the Slurm profile's README document runs as written: the `pri`
examples for real (in an empty folder, in order), the workflow commands as dry runs (exit 0)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def code_block_after(doc: Path, heading: str) -> list[str]:
    """The lines of the first ```bash block after ``heading`` in ``doc``."""
    text = doc.read_text()
    start = text.index(heading)
    m = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    return [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _env() -> dict:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TQDM_DISABLE="1")


@pytest.mark.slow
def test_readme_pri_commands_run_as_written(tmp_path, fmnist_root):
    lines = code_block_after(ROOT / "README.md", "### The `pri` command")
    assert len(lines) >= 6 and all(ln.startswith("pri ") for ln in lines), lines
    for line in lines:
        r = subprocess.run(shlex.split(line), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
    assert {"teacher.pt", "pool.pt", "smi.pt", "student.json", "quant.json", "eff.json", "a.pt", "b.pt"} <= {
        p.name for p in tmp_path.iterdir()}


def _dry(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), *args, "-n", "--quiet", "rules"]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [
    ["--cores", "all"],                                                        # README quick start, dry
    ["--configfile", "config/fmnist-long.yaml", "--cores", "all"],            # README: more power
    ["--profile", "workflow/profiles/slurm"],                                  # the profile README's dry run
    ["--profile", "workflow/profiles/slurm", "--configfile", "config/paper.yaml"],
    ["--profile", "workflow/profiles/slurm", "--configfile", "config/test.yaml"],
], ids=["quick-start", "fmnist-long", "profile", "profile-paper", "profile-smoke"])
def test_documented_workflow_commands_dry_run(args):
    r = _dry(args)
    assert r.returncode == 0, r.stderr[-3000:]


def test_pri_batch_help_prints_help(capsys):
    from pri.cli import main

    assert main(["batch", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pri batch") and "::" in out


def test_pri_batch_checks_every_command_before_running_the_first(tmp_path, capsys):
    from pri.cli import main

    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    common = ["invert", "--model", "vit_pico_patch4_28", "--schedule", "dmi", "--iterations", "4", "--batch", "4",
              "--no-progress"]
    rc = main(["batch", *common, "--out", str(first), "::", *common, "--lr", "-1", "--out", str(second)])
    err = capsys.readouterr().err
    assert rc == 2 and "--lr" in err and "nothing was run" in err
    assert not first.exists() and not second.exists()
    rc = main(["batch", *common, "--out", str(first), "::", *common, "--no-such-option", "--out", str(second)])
    assert rc == 2 and not first.exists()
    assert main(["batch", *common, "--out", str(first), "::", *common, "--out", str(second)]) == 0
    assert first.exists() and second.exists()
