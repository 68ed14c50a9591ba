"""pri/workflow/estimate.py and benchmarks/cost.py: the jobs priced are the jobs Snakemake runs, a step is
priced by its MACs, and the Slurm resources follow the price."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pri.workflow.estimate import Estimate, Rates, StepModel, invert_seconds, macs, workflow_resources

ROOT = Path(__file__).resolve().parents[2]
RATES = ROOT / "benchmarks" / "results" / "cpu" / "rates.json"


def _plan(name: str):
    from pri.workflow.config import read
    from pri.workflow.plan import Plan

    return Plan(read(str(ROOT / "config" / name)), check_inputs=False)


def _flat_rates(overhead=0.01, rate=1e9) -> dict:
    step = StepModel(overhead, rate)
    kinds = {k: step for k in ("invert", "train", "eval")}
    return {t: Rates(t, {m: kinds for m in ("vit_pico_patch4_28", "vit_femto_patch4_28", "deit_tiny_patch16_224")})
            for t in (1, 2)}


def _snakemake_job_counts(config: str, workdir: Path) -> dict:
    """The jobs Snakemake plans for ``config`` in an empty folder (a finished run in the repository
    would leave nothing to do)."""
    r = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "2", "--snakefile",
                        str(ROOT / "Snakefile"), "--configfile", str(ROOT / config)],
                       cwd=workdir, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    table = r.stdout.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] not in ("all", "total")}


@pytest.mark.parametrize("config", ["config/config.yaml", "config/test.yaml"])
def test_priced_jobs_are_the_jobs_snakemake_runs(config, tmp_path):
    est = Estimate(_plan(Path(config).name), _flat_rates(), cores=2)
    assert {r: v["jobs"] for r, v in est.by_rule().items()} == _snakemake_job_counts(config, tmp_path)


def test_an_inversion_is_priced_by_its_active_patches():
    step = StepModel(0.0, 1e9)
    n = 49
    dmi = invert_seconds(step, "vit_pico_patch4_28", "dmi", 200, 28)
    assert dmi == pytest.approx(200 * 28 * macs("vit_pico_patch4_28", "invert", n) / 1e9)
    pri = invert_seconds(step, "vit_pico_patch4_28", "pri_v7", 200, 28)
    assert pri < dmi / 4  # 4 trajectories instead of 28, and fewer patches as they detach
    # a per-step overhead is paid once per step, whatever the batch
    assert invert_seconds(StepModel(0.5, 1e30), "vit_pico_patch4_28", "dmi", 200, 28) == pytest.approx(100.0)


def test_slurm_resources_follow_the_price(tmp_path):
    import json

    plan = _plan("config.yaml")
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({str(t): r.to_json() for t, r in _flat_rates().items()}))
    cheap = workflow_resources(plan, str(path))
    path.write_text(json.dumps({str(t): r.to_json() for t, r in _flat_rates(rate=1e6).items()}))
    dear = workflow_resources(plan, str(path))
    assert set(cheap) >= {"teacher", "invert_main", "distill_main", "analysis"}
    assert all(15 <= cheap[r]["runtime"] <= dear[r]["runtime"] <= 12 * 60 for r in cheap)
    assert dear["invert_main"]["runtime"] > cheap["invert_main"]["runtime"]
    assert workflow_resources(plan, str(tmp_path / "absent.json")) == {}


@pytest.mark.parametrize("config", ["config/config.yaml", "config/fmnist-long.yaml"])
def test_cost_command_prints_every_rule_and_the_wall_clock(config):
    assert RATES.exists(), "benchmarks/results/cpu/rates.json: run benchmarks/cost.py --measure"
    r = subprocess.run([sys.executable, "benchmarks/cost.py", "--config", config, "--cores", "2"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| invert_main |" in r.stdout and "| teacher |" in r.stdout
    minutes = float(re.search(r"snakemake --cores 2` on this kind of machine: ([\d.]+) min", r.stdout)[1])
    assert minutes > 1


def test_scratch_seeds_leave_the_other_seeds_to_the_verdict_student():
    """distill.scratch_seeds: the listed seeds' jobs train the from-scratch student too, the others
    pass --kd-runs 0; the estimate prices them accordingly; a seed outside the run is refused."""
    from pri.errors import PriError
    from pri.workflow.plan import Plan

    plan = _plan("config.yaml")
    base = Estimate(plan, _flat_rates(), 2)
    cfg = dict(plan.config, distill=dict(plan.config["distill"], scratch_seeds=[0]))
    fewer = Plan(cfg, check_inputs=False)
    argv = {s: fewer.distill_job("fmnist", "main", s, "t.pt", 2) for s in fewer.seeds}
    kd = lambda a: [a[i + 1] for i, x in enumerate(a) if x == "--kd-runs"][-1:]  # noqa: E731 - the last one counts
    assert kd(argv[0]) != ["0"] and kd(argv[1]) == ["0"] and kd(argv[2]) == ["0"]
    cheap = Estimate(fewer, _flat_rates(), 2)
    job = lambda e, i: [j for j in e.jobs if j.rule == "distill_main"][i].seconds  # noqa: E731
    assert job(cheap, 0) == pytest.approx(job(base, 0)) and job(cheap, 1) < job(base, 1)
    with pytest.raises(PriError, match="distill.scratch_seeds"):
        Plan(dict(cfg, distill=dict(cfg["distill"], scratch_seeds=[7])), check_inputs=False)
    with pytest.raises(PriError, match="distill.scratch_seeds"):
        Plan(dict(cfg, distill=dict(cfg["distill"], probe_runs=0)), check_inputs=False)
