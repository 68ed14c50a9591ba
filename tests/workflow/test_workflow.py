"""The Snakemake workflow: dry runs, config errors found before any job, values that cannot reach
a shell as commands, and the tiny config end to end (interrupted and resumed)."""
import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helper import config_dict

from analysis import stats

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
CLAIM_IDS = {"1", "2a", "2b", "3a", "3b", "3c", "4a", "4b", "5", "6", "7", "8", "9"}
VERDICTS = set(stats.VERDICTS)  # with "control passed"/"control failed": the rows of an assay's positive control


def snakemake(args, cwd, timeout=600, **kw):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def _config(tmp_path, base="test.yaml", **changes):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_dict(base, **changes)))
    return path


def _jobs(out: str) -> dict:
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


def test_dry_run_of_the_default_config(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    r = snakemake(["-n", "--quiet", "rules"], tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    seeds = len(cfg["inversion"]["seeds"])
    jobs = _jobs(r.stdout + r.stderr)
    assert jobs["teacher"] == 1 and jobs["invert_main"] == seeds and jobs["distill_main"] == seeds
    eff = cfg["efficiency"]
    assert jobs["efficiency_flops"] == len(eff["models"])
    assert jobs["efficiency_time"] == len(eff.get("time_models") or eff["models"])
    assert jobs["quantize"] == seeds and jobs["quantize_baseline"] == 1 and jobs["analysis"] == 1
    assert jobs.get("invert_iso") and jobs.get("invert_oneclass")  # the controls run by default


def test_dry_run_of_the_paper_config_lists_what_is_missing_and_plans_efficiency(tmp_path):
    r = snakemake(["-n", "--quiet", "rules", "--configfile", str(ROOT / "config" / "paper.yaml")], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "teachers.deit_tiny_cifar100.data_root" in out and "teachers.deit_tiny_cifar100.init_checkpoint" in out
    assert "teachers.deit_tiny_imagenet.checkpoint" in out
    jobs = _jobs(out)
    assert {"efficiency_flops", "efficiency_time", "analysis"} <= set(jobs)
    assert not any(j.startswith(("invert", "distill", "quantize", "teacher")) for j in jobs)


def test_dry_run_of_the_paper_config_with_its_files_plans_quantisation_and_controls(tmp_path):
    """With every file where config/paper.yaml expects it (empty stand-ins: the plan only checks that
    they exist), the dry run plans quantisation for the ImageNet teachers, distillation for the CIFAR
    ones only, and the controls on DeiT-Tiny CIFAR-100."""
    for m in ("tiny", "small", "base"):
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
        (tmp_path / "checkpoints" / f"deit_{m}_patch16_224.pth").write_bytes(b"x")
    for d, names in (("data/cifar-100-python", ["train", "test"]),
                     ("data/cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])):
        (tmp_path / d).mkdir(parents=True)
        for n in names:
            (tmp_path / d / n).write_bytes(b"x")
    for split in ("train", "val"):
        (tmp_path / "data" / "imagenet" / split / "n01440764").mkdir(parents=True)
    r = snakemake(["-n", "--quiet", "rules", "--configfile", str(ROOT / "config" / "paper.yaml")], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout + r.stderr)
    assert jobs["teacher"] == 9 and jobs["quantize"] == 3 * 3 and jobs["quantize_baseline"] == 3
    assert jobs["invert_main"] == 6 * 3 * 23 + 3 * 3 and jobs["distill_main"] == 6 * 3  # 23 jobs: 2800 balanced images
    assert jobs["invert_iso"] == jobs["invert_oneclass"] == 3 and jobs["distill_oneclass"] == 3


@pytest.mark.parametrize("change,needle", [
    ({"inversion.iteratons": 5}, "inversion.iteratons: unknown key"),
    ({"inversion.iterations": "many"}, "inversion.iterations: 'many' is not of type 'integer'"),
    ({"inversion.methods": ["pri_v0"]}, "inversion.methods: pri_v0: the division factor must be >= 1"),
    ({"efficiency.mode": "fast"}, "efficiency.mode: 'fast' is not one of"),
    ({"distill.student": "not_a_vit"}, "distill.student: unknown model 'not_a_vit'"),
    ({"inversion.methods": ["dmi", "pri_v17"]}, "config key inversion.methods: pri_v17 on teachers.digits"),
    ({"inversion.images": 3}, "config key inversion.images"),
    ({"distill.images": 99}, "config key distill.images"),
    ({"inversion.iterations": 1}, "config key inversion.iterations"),
    ({"inversion.seeds": [0, -1]}, "config key inversion.seeds.1: must be an integer in [0, 2^63 - 1], got -1"),
    ({"inversion.tv_weight": float("nan")}, "config key inversion.tv_weight: must be a finite number >= 0, got nan"),
    ({"run": ".."}, "config key run: '..' does not match"),
    ({"teachers.digits.num_classes": 5}, "config key teachers.digits.num_classes: "),
    ({"efficiency.models": ["deit_tiny_patch16_224", "nope_vit"]}, "config key efficiency.models.1: unknown model"),
])
def test_config_mistakes_stop_the_dry_run_in_one_line(tmp_path, change, needle):
    r = snakemake(["-n", "--configfile", str(_config(tmp_path, **change))], tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    lines = [ln for ln in out.splitlines() if needle in ln]
    assert len(lines) == 1 and "nothing was run" in out, out
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_config_cannot_run_commands(tmp_path):
    """A teacher id or model name with shell syntax is refused by the schema; a path with shell
    syntax (paths may hold any character) reaches the commands quoted, as one argument."""
    marker = tmp_path / "PWNED"
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["teachers"] = {f"d;touch {marker};x": cfg["teachers"]["digits"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake(["--cores", "1", "--configfile", str(tmp_path / "bad.yaml")], tmp_path)
    assert r.returncode != 0 and "does not match" in r.stdout + r.stderr and not marker.exists()
    for key, value in (("teachers.digits.model", f"vit;touch {marker}"),
                       ("efficiency.models", [f"deit_tiny_patch16_224;touch {marker}"]),
                       ("teachers.digits with space", None)):
        changes = {key: value} if value is not None else {}
        path = _config(tmp_path, **changes)
        if value is None:
            cfg = yaml.safe_load(path.read_text())
            cfg["teachers"] = {"d igits": cfg["teachers"]["digits"]}
            path.write_text(yaml.safe_dump(cfg))
        r = snakemake(["--cores", "1", "--configfile", str(path)], tmp_path)
        assert r.returncode != 0 and "nothing was run" in r.stdout + r.stderr and not marker.exists()
        assert not (tmp_path / "results").exists()
    # a checkpoint path full of shell syntax: the teacher is evaluated from it, and nothing else runs
    from pri.files.models import build_model, save_checkpoint

    ck = tmp_path / f"t;touch {marker};'x $(touch {marker}).pt"
    save_checkpoint(str(ck), build_model("vit_pico_patch2_8", num_classes=10), "vit_pico_patch2_8", (0.3,), (0.4,),
                    {"recipe": {"dataset": "digits"}})
    r = snakemake(["--cores", "1", "--configfile", str(_config(tmp_path, **{"teachers.digits.checkpoint": str(ck)})),
                   "--until", "teacher"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "results" / "test" / "teachers" / "digits" / "teacher.json").exists()
    assert not marker.exists()


def test_workflow_is_lint_clean(tmp_path):
    r = snakemake(["--lint", "--configfile", str(ROOT / "config" / "test.yaml")], tmp_path)
    assert r.returncode == 0 and "Congratulations, your workflow is in a good condition" in r.stdout + r.stderr, \
        r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.slow
def test_rule_logs_get_a_progress_line_at_most_every_15_seconds(tmp_path):
    """A progress bar writing to a log file (not a terminal) refreshes only on its 15 s interval,
    even when its postfix changes every step (which forces a refresh on a terminal) and when tqdm's
    monitor thread would force one on a bar it thinks stalled (a second frame ~1 s after a regular
    one). 33 s of progress: frames at 0, 15 and 30 s and the closing one."""
    code = ("import time\nfrom pri.core.runtime import progress\nbar = progress(660, True, 'x')\n"
            "for i in range(660):\n    time.sleep(0.05)\n    bar.set_postfix(loss=f'{i}')\n    "
            "bar.set_postfix_str(f'active={i}')\n    bar.update(1)\nbar.close()\n")
    log = tmp_path / "rule.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stderr=f, stdout=f, check=True,
                       env={k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"})
    frames = [x for x in log.read_text().replace("\r", "\n").splitlines() if "it/s" in x or "s/it" in x or "?it" in x]
    seconds = [int(m.group(1)) * 60 + int(m.group(2)) for m in (re.search(r"\[(\d+):(\d+)", x) for x in frames)]
    assert 2 <= len(frames) <= 4, frames
    assert all(b - a >= 14 for a, b in zip(seconds[:-2], seconds[1:-1])), frames  # the closing frame aside


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


def _finished(log: Path, rule_prefix: str) -> int:
    """Jobs of rules whose name starts with ``rule_prefix`` that Snakemake reports finished."""
    text = log.read_text() if log.exists() else ""
    return sum(1 for line in text.splitlines() if line.startswith("Finished jobid") and f"Rule: {rule_prefix}" in line)


@pytest.mark.slow
def test_tiny_config_end_to_end_interrupted_and_resumed(tmp_path):
    """Interrupt once the first inversion job has finished (waiting on the workflow's own log, not on
    the clock), resume as the README says: finished pools are kept as they were, nothing
    half-written is used; then report.html exists, claims.csv has a verdict per claim with numbers,
    and a re-run of one job reproduces its numbers exactly."""
    cfg = str(ROOT / "config" / "test.yaml")
    run_dir = tmp_path / "results" / "test"
    args = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--cores", "2", "--configfile", cfg,
            "--report", "report.html", "--report-after-run"]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        p = subprocess.Popen(args, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ceiling = time.time() + 1800  # a ceiling for a very slow machine, not a speed requirement
    while time.time() < ceiling and _finished(log, "invert") < 1 and p.poll() is None:
        time.sleep(0.5)
    assert _finished(log, "invert") >= 1, f"no inversion job finished; the log says:\n{log.read_text()[-3000:]}"
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C
    p.wait(timeout=300)
    before = _pools(run_dir)
    assert before, log.read_text()[-3000:]
    r = subprocess.run(args + ["--rerun-incomplete"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = _pools(run_dir)
    cfg_d = yaml.safe_load(Path(cfg).read_text())
    tags, seeds = len(cfg_d["inversion"]["methods"]), len(cfg_d["inversion"]["seeds"])
    assert len([p for p in after if "/main/" in str(p)]) == tags * seeds
    kept = [path for path, mtime in before.items() if after.get(path) == mtime]
    assert len(kept) >= len(before) - tags, f"finished pools were redone: {sorted(set(before) - set(kept))}"
    assert not list(run_dir.rglob("*.part"))  # temporaries of interrupted jobs were removed

    assert (tmp_path / "report.html").stat().st_size > 100_000
    with open(run_dir / "analysis" / "claims.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["claim_id"] for r in rows} == CLAIM_IDS
    for row in rows:
        assert row["verdict"] in VERDICTS and row["claim_verdict"] in set(stats.CLAIM_VERDICTS), row
        assert row["role"] in ("part", "control", "check"), row
        assert row["our_value"], row  # never a verdict without numbers (or the reason it was not run)
        if row["verdict"] != "not run" and row["claim_id"] in ("3a", "3b", "5", "6", "9"):
            assert row["n"] and row["ci_lo"] and row["ci_hi"] and row["region"], row
    # claim 4b is judged behind its control: a control row per bit setting, and a part is judged only
    # where the control passed
    b4 = [r for r in rows if r["claim_id"] == "4b"]
    controls = {r["part"]: r["verdict"] for r in b4 if r["role"] == "control"}
    assert set(controls) == {"control: real - noise (W8A8)", "control: real - noise (W4A8)"}, controls
    for r in b4:
        if r["role"] == "part" and r["verdict"] != "not testable here":
            assert controls[f"control: real - noise ({r['part'].split('(')[-1].rstrip(')')})"] == "control passed", r
    for name in ("accuracy", "differences", "quantization", "efficiency", "theorem1", "teachers", "verdicts"):
        assert (run_dir / "analysis" / "tables" / f"{name}.csv").stat().st_size > 0
    teacher = json.loads((run_dir / "teachers" / "digits" / "teacher.json").read_text())
    assert teacher["top1"] > 0.5

    # determinism: redo one seed's inversion and its distillation; the numbers are identical
    metrics = run_dir / "distill" / "digits" / "main" / "pri_v4" / "seed1.json"
    old = json.loads(metrics.read_text())
    pool = (run_dir / "pools" / "digits" / "main" / "pri_v4" / "seed1" / "batch0.pt").relative_to(tmp_path)
    stamps = {f: (tmp_path / f).stat().st_mtime_ns for f in (pool, metrics.relative_to(tmp_path))}
    r = subprocess.run(args + ["--forcerun", str(pool), "--until", "distill_main"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    assert all((tmp_path / f).stat().st_mtime_ns != t for f, t in stamps.items()), "the job was not redone"
    new = json.loads(metrics.read_text())
    assert new["top1"] == old["top1"] and new["top1_runs"] == old["top1_runs"]
    _measured_outputs_are_the_only_ones_timing_changes(run_dir, tmp_path)


def _analysis_files(run_dir: Path, out: Path) -> dict:
    """python -m analysis over the run's results into ``out``: {file relative to out: sha256}."""
    from analysis.__main__ import main as analysis_main

    results = lambda kind, pattern: [str(p) for p in sorted((run_dir / kind).rglob(pattern))  # noqa: E731
                                     if not p.name.endswith(".timing.json")]
    argv = ["--out", str(out), "--teachers", *results("teachers", "teacher.json"),
            "--distill", *results("distill", "*.json"), "--pools", *results("pools", "*.pt"),
            "--efficiency", *results("efficiency", "*.json"), "--quantize", *results("quantize", "*.json")]
    assert analysis_main(argv) == 0
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}


def _measured_outputs_are_the_only_ones_timing_changes(run_dir: Path, tmp_path: Path):
    """Same work, same bytes, in the analysis: run it twice on the same results, the second time
    with every measured number in the timing side files changed. Exactly the outputs that
    analysis/outputs.py lists as measured may differ (and the timing table must: the check can
    tell), every other output is the same bytes; the analysis writes exactly the files it lists."""
    from analysis import outputs

    first = _analysis_files(run_dir, tmp_path / "analysis_a")
    for side in run_dir.rglob("*.timing.json"):
        t = json.loads(side.read_text())
        side.write_text(json.dumps({k: (v * 1.7 if isinstance(v, float) else
                                        [x * 1.7 for x in v] if isinstance(v, list) else v) for k, v in t.items()}))
    second = _analysis_files(run_dir, tmp_path / "analysis_b")
    assert set(first) == set(second) == set(outputs.all_files())
    differ = {f for f in first if first[f] != second[f]}
    assert "tables/timing.csv" in differ, "the timing table did not follow the timing side files"
    assert differ <= set(outputs.measured_files()), f"not listed as measured: {sorted(differ - set(outputs.measured_files()))}"


def _tree(root: Path) -> set:
    return {str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()}


@pytest.mark.slow
def test_kill_9_of_snakemake_and_resume_as_the_readme_says(tmp_path):
    """SIGKILL to Snakemake's whole process group once the first pool exists (its lock and the
    incomplete markers stay), then the README's resume: the same command is refused by the lock;
    `snakemake --unlock`; without --rerun-incomplete the killed job's outputs are refused as
    incomplete; with it the same command completes. The finished
    teacher is kept, and the results hold the same files as an uninterrupted run, the same bytes
    for the teacher and every pool."""
    cfg = config_dict("test.yaml", **{"inversion.methods": ["dmi", "smi_v2", "pri_v2"], "quantize.enabled": False,
                                      "efficiency.enabled": False, "controls.iso_compute.budgets": [],
                                      "controls.one_class.class": None, "teachers.digits.train.epochs": 2})
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for d in (whole, killed):
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = ["--cores", "2", "--configfile", "config.yaml"]
    r = snakemake(run, whole, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), *run]
    with open(tmp_path / "killed.log", "w") as f:
        p = subprocess.Popen(cmd, cwd=killed, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    ceiling, pools = time.time() + 1200, killed / "results" / "test" / "pools"
    while time.time() < ceiling and p.poll() is None and not list(pools.rglob("*.pt")):
        time.sleep(0.2)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:  # the run ended by itself: the assertion below shows its log
        pass
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL and list(pools.rglob("*.pt")), (tmp_path / "killed.log").read_text()[-3000:]
    teacher = killed / "results" / "test" / "teachers" / "digits" / "teacher.pt"
    stamp = teacher.stat().st_mtime_ns

    r = snakemake(run + ["--rerun-incomplete"], killed)
    assert r.returncode != 0 and "LockException" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    r = snakemake(["--unlock"], killed)
    assert r.returncode == 0, r.stderr[-3000:]
    r = snakemake(run, killed)  # the killed job's pools are marked incomplete
    assert r.returncode != 0 and "IncompleteFilesException" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    r = snakemake(run + ["--rerun-incomplete"], killed, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    assert teacher.stat().st_mtime_ns == stamp, "the finished teacher job was redone"
    assert _tree(killed) == _tree(whole)
    assert not list((killed / "results").rglob("*.part"))
    for rel in sorted(f for f in _tree(whole) if f.endswith(".pt")):
        assert (killed / rel).read_bytes() == (whole / rel).read_bytes(), f"{rel} differs from the uninterrupted run's"
