# Shared definitions: the plan of the run (pri.workflow.plan: which jobs, what is missing), path templates
# (pri.workflow.layout), the Python that runs the suite's commands, global wildcard constraints.
import os
import shlex
import sys

from pri.errors import PriError
from pri.workflow.estimate import workflow_resources
from pri.workflow.layout import PATTERNS
from pri.workflow.plan import Plan

try:
    PLAN = Plan(config)
except PriError as e:
    raise WorkflowError(f"invalid configuration, nothing was run:\n  config key {e.option}: {e.message}")
P = PLAN.P
# Slurm resources (runtime, memory) of each rule, priced from the plan's jobs (pri.workflow.estimate)
RESOURCES = workflow_resources(PLAN, os.path.join(workflow.basedir, "benchmarks", "results", "cpu", "rates.json"))
# The suite's commands run with the Python that runs Snakemake, so no PATH set-up is needed; with
# --sdm conda, with the Python of the environment made from environment.yml.
ENV = "../../environment.yml"
PY = "python" if "CONDA" in str(workflow.deployment_settings.deployment_method).upper() else sys.executable


wildcard_constraints:
    **PATTERNS,


if PLAN.missing:
    _lines = "\n".join(f"  - config key {m.key}: {m.reason}" for m in PLAN.missing)
    if config["on_missing"] == "stop":
        raise WorkflowError(f"missing inputs, nothing was run:\n{_lines}\n"
                            "Fix the keys above, or set on_missing: skip to run what does not need them.")
    print(f"pri: skipped for {sorted({m.teacher for m in PLAN.missing})}:\n{_lines}\n"
          "The efficiency track needs no weights and runs; report.html lists what was skipped.", file=sys.stderr)


def quoted(args):
    """A list of command-line arguments as one shell-quoted string (the only way values reach a shell)."""
    return shlex.join(str(a) for a in args)


def all_cores(cluster_default=8):
    """Every core of a local run (a job that must not share the machine); on a cluster, where
    Snakemake has no total, the profile's cpus_per_task decides and this is only the default."""
    try:
        return workflow.cores
    except WorkflowError:
        return cluster_default


def reported(path, name, category):
    """An analysis output shown in report.html with its caption from workflow/report/<name>.rst."""
    return report(path, caption=f"../report/{name}.rst", category=category)
