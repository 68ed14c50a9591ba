"""End-to-end: a real one-node Slurm cluster on localhost runs a Snakemake
workflow through the repository's slurm profile (workflow/profiles/slurm).

The cluster (munged, mariadbd, slurmdbd, slurmctld, slurmd) is started by
tests/slurm/start.sh and always stopped again by tests/slurm/stop.sh.  Needs
root on Linux with apt-get (Debian/Ubuntu); when the cluster cannot be started
the test is skipped with the reason, or fails when PRI_REQUIRE_SLURM=1.
"""

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from analysis.stats import VERDICTS  # noqa: E402
from tests.slurm.cluster import SlurmUnavailable, run_under_slurm, slurm_cluster  # noqa: E402

pytestmark = pytest.mark.slurm

# Hard limit for the snakemake run itself.
RUN_TIMEOUT_S = 600

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with slurm_cluster(tmp_path_factory.mktemp("slurm-state")) as c:
            yield c
    except SlurmUnavailable as e:
        msg = f"local Slurm test cluster unavailable: {e}"
        if os.environ.get("PRI_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def gpu_rules_of_profile(profile: dict) -> set[str]:
    return {r for r, res in (profile.get("set-resources") or {}).items() if res.get("gpu")}


def check_slurm_run(run, cluster) -> None:
    """Checks that hold for any workflow run through the slurm profile."""
    explain = (
        f"snakemake log ({run.log_path}):\n{run.log[-6000:]}\nsacct rows: {run.sacct_rows}"
    )
    assert not run.timed_out, f"snakemake did not finish in time\n{explain}"
    assert run.proc.returncode == 0, explain

    # every job went through sbatch and is in Slurm's accounting
    assert run.job_ids, f"no job was submitted to Slurm\n{explain}"
    assert len(run.sbatch_calls) == len(run.job_ids), explain
    assert sorted(r["JobID"] for r in run.sacct_rows) == sorted(run.job_ids), explain
    for row in run.sacct_rows:
        assert row["State"] == "COMPLETED", row
        assert row["Partition"] == cluster.partition, row
        assert row["Account"] == cluster.account, row
        assert row["Comment"].startswith("rule_"), row

    # GPU rules (per the profile) asked Slurm for a GPU and got one; the others did not
    profile = yaml.safe_load((run.profile_dir / "config.yaml").read_text())
    gpu_rules = gpu_rules_of_profile(profile)
    ran = {r["Comment"].removeprefix("rule_").split("_wildcards_")[0] for r in run.sacct_rows}
    assert ran & gpu_rules, f"no GPU rule ran (ran: {sorted(ran)})"
    for row in run.sacct_rows:
        rule = row["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        if rule in gpu_rules:
            assert "gres/gpu=1" in row["ReqTRES"], row
            assert "gres/gpu=" in row["AllocTRES"], row  # an --exclusive job holds every GPU of the node
        else:
            assert "gres/gpu" not in row["ReqTRES"], row
    for call in run.sbatch_calls:
        rule = call.split("--comment rule_", 1)[1].split()[0].split("_wildcards_")[0]
        assert f"-p {cluster.partition}" in call and f"-A {cluster.account}" in call, call
        assert ("--gpus=1" in call) == (rule in gpu_rules), call


def test_workflow_runs_through_slurm_profile(cluster, tmp_path):
    """The repository's workflow with the tiny test config, every job through sbatch."""
    import csv

    workdir = tmp_path / "work"
    workdir.mkdir()
    # the tiny test config with one seed and three schedules, so that the test stays short on a
    # two-core machine (each Slurm job starts its own Python)
    cfg = yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text())
    cfg["inversion"]["seeds"] = [0]
    cfg["inversion"]["methods"] = ["dmi", "smi_v2", "pri_v2"]
    cfg["efficiency"]["time_tags"] = ["dmi", "smi_default", "pri_v2"]
    cfg["quantize"]["tags"] = ["smi_v2", "pri_v2"]
    cfg["controls"] = {}
    config = workdir / "slurm-test.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = run_under_slurm(cluster, workdir, REPO_ROOT / "Snakefile", ["--configfile", str(config)],
                          timeout=RUN_TIMEOUT_S)
    check_slurm_run(run, cluster)

    # every rule of the workflow ran as Slurm jobs, and the run completed with its report
    ran = sorted({r["Comment"].removeprefix("rule_").split("_wildcards_")[0] for r in run.sacct_rows})
    assert ran == ["analysis", "distill_main", "efficiency_flops", "efficiency_time", "invert_main", "quantize",
                   "quantize_baseline", "teacher"], ran
    results = workdir / "results" / "test"
    with open(results / "analysis" / "claims.csv") as f:
        assert {r["verdict"] for r in csv.DictReader(f)} <= set(VERDICTS)
    # one job inverts every tag of a seed
    assert len(list((results / "pools").rglob("*.pt"))) == 3 * len(run.sbatch_calls_for_rule("invert_main"))
    # the report, written after the run on the login node as the profile README says
    import subprocess

    rep = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
                          "--configfile", str(config), "--report", "report.html"], cwd=workdir,
                         capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0 and (workdir / "report.html").is_file(), rep.stderr[-2000:]
    # the GPU rules asked Slurm for one GPU each
    (teacher_call,) = run.sbatch_calls_for_rule("teacher")
    assert "--gpus=1" in teacher_call and "--ntasks" not in teacher_call, teacher_call
    (analysis_call,) = run.sbatch_calls_for_rule("analysis")
    assert "--gpus" not in analysis_call, analysis_call
