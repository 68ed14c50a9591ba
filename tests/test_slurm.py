"""End-to-end: a real one-node Slurm cluster on localhost runs a Snakemake
workflow through the repository's slurm profile (workflow/profiles/slurm).

The cluster (munged, mariadbd, slurmdbd, slurmctld, slurmd) is started by
tests/slurm/start.sh and always stopped again by tests/slurm/stop.sh.  Needs
root on Linux with apt-get (Debian/Ubuntu); when the cluster cannot be started
the test is skipped with the reason, or fails when PRI_REQUIRE_SLURM=1.
"""

import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.slurm.cluster import SlurmUnavailable, run_under_slurm, slurm_cluster  # noqa: E402

pytestmark = pytest.mark.slurm

# Hard limit for the snakemake run itself (the whole test takes ~1 minute).
RUN_TIMEOUT_S = 150

TOY_SNAKEFILE = textwrap.dedent(
    """
    # Toy workflow: rule names match workflow/profiles/slurm/config.yaml, so the
    # profile's per-rule resources (gpu for `teacher`) apply.
    rule all:
        input:
            "results/report.txt",

    rule prepare:  # not in set-resources: default resources, cpus = threads
        output:
            "results/data.txt",
        threads: 1
        shell:
            "echo data > {output}"

    rule teacher:  # GPU rule
        output:
            "results/teacher.txt",
        threads: 1
        resources:
            gpu=1,
        shell:
            "echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"

    rule report:
        input:
            "results/data.txt",
            "results/teacher.txt",
        output:
            "results/report.txt",
        threads: 1
        shell:
            "cat {input} > {output}"
    """
)


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
            assert "gres/gpu=1" in row["AllocTRES"], row
        else:
            assert "gres/gpu" not in row["ReqTRES"], row
    for call in run.sbatch_calls:
        rule = call.split("--comment rule_", 1)[1].split()[0].split("_wildcards_")[0]
        assert f"-p {cluster.partition}" in call and f"-A {cluster.account}" in call, call
        assert ("--gpus=1" in call) == (rule in gpu_rules), call


def test_workflow_runs_through_slurm_profile(cluster, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    snakefile = workdir / "Snakefile"
    snakefile.write_text(TOY_SNAKEFILE)
    run = run_under_slurm(cluster, workdir, snakefile, timeout=RUN_TIMEOUT_S)
    # The real workflow instead:
    # run = run_under_slurm(cluster, workdir, REPO_ROOT / "workflow" / "Snakefile", ["--configfile", str(REPO_ROOT / "config" / "test.yaml")], timeout=RUN_TIMEOUT_S)

    check_slurm_run(run, cluster)

    # --- specific to the toy workflow ---
    rules = sorted(r["Comment"] for r in run.sacct_rows)
    assert rules == ["rule_prepare", "rule_report", "rule_teacher"], rules
    assert (workdir / "results" / "report.txt").read_text().startswith("data\njob=")
    teacher_out = (workdir / "results" / "teacher.txt").read_text()
    # ran inside a Slurm job, and Slurm bound the (fake) GPU to the job step
    assert teacher_out.startswith("job=") and "job= " not in teacher_out, teacher_out
    assert "gpus=none" not in teacher_out, teacher_out
    # the sbatch flags the plugin built from the (test-adapted) profile
    (teacher_call,) = run.sbatch_calls_for_rule("teacher")
    for flag in ("--gpus=1", "--mem 500", "-t 10", "--cpus-per-task=1"):
        assert flag in teacher_call, (flag, teacher_call)
    assert "--ntasks" not in teacher_call, teacher_call
    (prepare_call,) = run.sbatch_calls_for_rule("prepare")
    # `prepare` is not in set-resources: default cpus_per_task (= threads) applies
    assert "--ntasks=1 --cpus-per-task=1" in prepare_call, prepare_call
