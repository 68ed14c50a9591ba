"""What a config will cost before it runs: jobs per rule, CPU seconds on this kind of machine and
the wall-clock of `snakemake --cores N`, and GPU hours on the measured H200 figures.

    python benchmarks/cost.py [--config config/config.yaml] [--cores 2] [--measure]

CPU seconds are priced from the plan (the jobs Snakemake will run) with step times of the config's
own models (pri/workflow/estimate.py), read from benchmarks/results/cpu/rates.json (measured on a 2-core
machine of the kind CI runs on); ``--measure`` times the steps here first (about a minute) and
writes them there. GPU hours come from benchmarks/gpu_hours.py.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

RATES = os.path.join(HERE, "results", "cpu", "rates.json")


def models_of(plan) -> list[str]:
    ms = [plan.teachers[t]["model"] for t in plan.active] + [plan.student_of(t)[0] for t in plan.active]
    if plan.config["efficiency"].get("enabled", True):
        ms += plan.efficiency_models("time")
    return list(dict.fromkeys(ms))


def rates_for(plan, path: str, cores: int, measure: bool) -> dict:
    from pri.workflow.estimate import Rates, measure as measure_rates

    threads = sorted({1, int(plan.config.get("threads") or 1), cores})
    stored = {}
    if os.path.exists(path):
        import json

        with open(path) as f:
            stored = {int(k): v for k, v in json.load(f).items()}
    out = {}
    for th in threads:
        r = load(stored[th]) if th in stored else Rates(th)
        todo = [m for m in models_of(plan) if m not in r.models]
        if measure or (todo and not r.models):
            fresh = measure_rates(models_of(plan) if measure else todo, th)
            r.models.update(fresh.models)
            r.machine = fresh.machine
        out[th] = r
    if measure:
        from pri.files.io import atomic_write_json

        atomic_write_json(path, {str(k): v.to_json() for k, v in {**{k: load(v) for k, v in stored.items()}, **out}.items()})
    return out


def load(d):
    from pri.workflow.estimate import Rates

    return Rates.from_json(d)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(HERE, "..", "config", "config.yaml"))
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="the cores of `snakemake --cores`")
    ap.add_argument("--rates", default=RATES, help="measured step times (JSON)")
    ap.add_argument("--measure", action="store_true", help="time the config's models here first and store them")
    ap.add_argument("--measured", default=os.path.join(HERE, "results", "h200"), help="H200 figures (GPU hours)")
    a = ap.parse_args(argv)
    import gpu_hours

    from pri.workflow.estimate import Estimate
    from pri.workflow.plan import Plan

    cfg = gpu_hours.read_config(a.config)
    plan = Plan(cfg, check_inputs=False)  # price every job the config asks for, data or not
    est = Estimate(plan, rates_for(plan, a.rates, a.cores, a.measure), a.cores)
    families, _, _, _ = gpu_hours.hours_of(cfg, a.measured)
    hours = {f.replace(" (", "_").rstrip(")"): h for f, h in families.items()}  # "invert (main)" -> invert_main
    print(f"config: {os.path.relpath(a.config)}; CPU: {a.cores} cores, step times measured on "
          f"{est.rates[min(est.rates)].machine or 'this machine'}\n")
    print("| rule | jobs | CPU job-minutes | longest job (min) | memory (MB) | GPU hours on one H200 |")
    print("|---|---|---|---|---|---|")
    for rule, r in est.by_rule().items():
        print(f"| {rule} | {r['jobs']} | {r['seconds'] / 60:.1f} | {r['max_seconds'] / 60:.1f} | {r['memory_mb']:.0f} | "
              f"{hours.get(rule, 0.0):.2f} |")
    total = sum(j.seconds for j in est.jobs)
    print(f"| total | {len(est.jobs)} | {total / 60:.1f} | | | {sum(hours.values()):.2f} |")
    print(f"\nexpected wall-clock of `snakemake --cores {a.cores}` on this kind of machine: "
          f"{est.wall_seconds() / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
