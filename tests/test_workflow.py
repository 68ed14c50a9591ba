"""The Snakemake workflow: dry runs, config errors, and the tiny config end to end."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
CLAIM_IDS = {"1", "2a", "2b", "3a", "3b", "3c", "4a", "4b", "5", "6", "7", "8"}
VERDICTS = {"supported", "not supported", "inconclusive", "not run"}


def snakemake(args, cwd, timeout=600, **kw):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def _config(tmp_path, base="test.yaml", **changes):
    cfg = yaml.safe_load((ROOT / "config" / base).read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dry_run_of_the_default_config(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    r = snakemake(["-n", "--quiet", "rules"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for rule, count in (("teacher", 1), ("invert", 18), ("distill", 18), ("efficiency_flops", 3),
                        ("efficiency_time", 3), ("analysis", 1)):
        assert any(line.split()[:2] == [rule, str(count)] for line in out.splitlines()), (rule, out)


def test_dry_run_of_the_paper_config_lists_what_is_missing_and_plans_efficiency(tmp_path):
    r = snakemake(["-n", "--quiet", "rules", "--configfile", str(ROOT / "config" / "paper.yaml")], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "teachers.deit_tiny_cifar100.data_root" in out and "teachers.deit_tiny_cifar100.init_checkpoint" in out
    assert "teachers.deit_tiny_imagenet.checkpoint" in out
    rules = {line.split()[0] for line in out.splitlines() if line.split() and line.split()[-1].isdigit()}
    assert {"efficiency_flops", "efficiency_time", "analysis"} <= rules
    assert "invert" not in rules and "distill" not in rules and "teacher" not in rules


@pytest.mark.parametrize("change,needle", [
    ({"inversion.iteratons": 5}, "inversion.iteratons: unknown key"),
    ({"inversion.iterations": "many"}, "inversion.iterations: 'many' is not of type 'integer'"),
    ({"inversion.methods": ["pri_v0"]}, "inversion.methods: pri_v0: the division factor must be >= 1"),
    ({"efficiency.mode": "fast"}, "efficiency.mode: 'fast' is not one of"),
])
def test_schema_errors_name_the_key(tmp_path, change, needle):
    r = snakemake(["-n", "--configfile", str(_config(tmp_path, **change))], tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert f"config key {needle}" in out and "nothing was run" in out, out


def test_missing_data_stops_before_any_job(tmp_path):
    cfg = _config(tmp_path, **{"teachers.digits.dataset": "fashion_mnist",
                               "teachers.digits.data_root": str(tmp_path / "nowhere")})
    r = snakemake(["--cores", "1", "--configfile", str(cfg)], tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "teachers.digits.data_root" in out and "dataset-fashion-mnist" in out, out
    assert not (tmp_path / "results").exists()


def _pools(run_dir):
    return {p: p.stat().st_mtime_ns for p in sorted((run_dir / "pools").rglob("*.pt"))}


@pytest.mark.slow
def test_tiny_config_end_to_end_interrupted_and_resumed(tmp_path):
    """Interrupt during inversion, resume: finished pools are kept as they were, nothing
    half-written is used; then report.html exists, claims.csv has a verdict per claim, and a
    re-run of one job reproduces its numbers exactly."""
    cfg = str(ROOT / "config" / "test.yaml")
    run_dir = tmp_path / "results" / "test"
    args = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--cores", "2", "--configfile", cfg,
            "--report", "report.html", "--report-after-run"]
    p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(_pools(run_dir)) < 3:
        time.sleep(0.2)
    assert len(_pools(run_dir)) >= 3, "no pool appeared"
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C
    p.communicate(timeout=120)
    before = _pools(run_dir)
    # resume as the README says; a job cut off at the moment its (atomically written) output
    # appeared is marked incomplete by Snakemake and redone, every other finished pool is kept
    r = subprocess.run(args + ["--rerun-incomplete"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = _pools(run_dir)
    assert len(after) == 14
    kept = [path for path, mtime in before.items() if after[path] == mtime]
    assert len(kept) >= len(before) - 2, f"finished pools were redone: {sorted(set(before) - set(kept))}"
    assert not list(run_dir.rglob("*.part"))  # temporaries of interrupted jobs were removed

    assert (tmp_path / "report.html").stat().st_size > 100_000
    with open(run_dir / "analysis" / "claims.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["claim_id"] for r in rows} == CLAIM_IDS
    for row in rows:
        assert row["verdict"] in VERDICTS, row
        assert row["our_value"], row  # never a verdict without numbers (or the reason it was not run)
    for name in ("accuracy", "efficiency", "theorem1", "teachers"):
        assert (run_dir / "analysis" / "tables" / f"{name}.csv").stat().st_size > 0
    teacher = json.loads((run_dir / "teachers" / "digits" / "teacher.json").read_text())
    assert teacher["top1"] > 0.5

    # determinism: redo one inversion and its distillation; the numbers are identical
    metrics = run_dir / "distill" / "digits" / "pri_v4" / "seed1.json"
    old = json.loads(metrics.read_text())
    # (a target names the output as the rule writes it: relative to the working directory)
    pool = (run_dir / "pools" / "digits" / "pri_v4" / "seed1" / "batch0.pt").relative_to(tmp_path)
    stamps = {f: (tmp_path / f).stat().st_mtime_ns for f in (pool, metrics)}
    r = subprocess.run(args + ["--forcerun", str(pool), "--until", "distill"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert all((tmp_path / f).stat().st_mtime_ns != t for f, t in stamps.items()), "the job was not redone"
    new = json.loads(metrics.read_text())
    assert new["top1"] == old["top1"] and new.get("top1_best") == old.get("top1_best")
