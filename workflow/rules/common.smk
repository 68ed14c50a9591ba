# Shared definitions: run folder, method tags, the preflight check of inputs, targets.
import json
import os
import shlex
import subprocess
import sys

from pri.models import HUB
from pri.sweep import cli_args, method_specs

RUN = config["run"]
R = f"results/{RUN}"
INV = config["inversion"]
DIS = config["distill"]
EFF = config["efficiency"]
SPECS = method_specs(INV["methods"], INV["iterations"])
TAGS = list(SPECS)
SEEDS = [int(s) for s in INV["seeds"]]
TEACHERS = config["teachers"]
# The suite's commands run with the Python that runs Snakemake, so no PATH set-up is needed.
PY = shlex.quote(sys.executable)
PRI = f"{PY} -m pri"


def _hub_missing(key, model):
    """'hub' weights: fetched now, when the workflow is planned (on the submitting machine, so
    compute nodes without a network find them in the hub cache), or found in that cache."""
    from pri.errors import PriError
    from pri.models import hub_checkpoint

    try:
        hub_checkpoint(model, key)
    except PriError as e:
        return [(key, e.message)]
    return []


def student_of(t):
    """(architecture, checkpoint or None) of a teacher's student: its own keys, else distill's."""
    return t.get("student") or DIS["student"], t.get("student_checkpoint") or DIS.get("student_checkpoint")


def _missing_for_teacher(tid, t):
    """[(config key, what is missing and how to get it)] for one teacher's accuracy track."""
    from pri.data import load_dataset
    from pri.errors import PriError
    from pri.models import known_model

    key = f"teachers.{tid}"
    out = []
    if not known_model(t["model"]):
        raise WorkflowError(f"config key {key}.model: unknown model {t['model']!r} (a timm ViT name or one "
                            "of the suite's small ViTs)")
    if t.get("checkpoint") and not os.path.isfile(t["checkpoint"]):
        out.append((f"{key}.checkpoint", f"file not found: {t['checkpoint']}"))
    if not t.get("checkpoint") and t.get("init_checkpoint") == HUB:
        out += _hub_missing(f"{key}.init_checkpoint", t["model"])
    elif not t.get("checkpoint") and t.get("init_checkpoint") and not os.path.isfile(t["init_checkpoint"]):
        out.append((f"{key}.init_checkpoint", f"file not found: {t['init_checkpoint']}"))
    if not t.get("checkpoint") and not t.get("init_checkpoint") and t["model"].startswith(("deit", "vit_base", "vit_small", "vit_large")):
        out.append((f"{key}.checkpoint", f"no trained {t['model']} given: set {key}.checkpoint to a trained "
                    f"teacher, or {key}.init_checkpoint to ImageNet weights to fine-tune from (a path, or "
                    f"'hub' for timm's weights from the Hugging Face hub)"))
    student, student_ckpt = student_of(t)
    key_s = f"{key}.student_checkpoint" if t.get("student_checkpoint") else "distill.student_checkpoint"
    if student_ckpt == HUB:
        out += _hub_missing(key_s, student)
    elif student_ckpt and not os.path.isfile(student_ckpt):
        out.append((key_s, f"file not found: {student_ckpt}"))
    try:
        load_dataset(t["dataset"], t.get("data_root"), split="test", option=f"{key}.data_root")
    except PriError as e:
        out.append((f"{key}.data_root", e.message))
    return out


def preflight():
    """Teachers whose accuracy track can run, and what is missing for the others."""
    ok, missing = [], []
    for tid, t in TEACHERS.items():
        m = _missing_for_teacher(tid, t)
        if m:
            missing += [{"teacher": tid, "key": k, "reason": r} for k, r in m]
        else:
            ok.append(tid)
    if missing:
        lines = "\n".join(f"  - config key {m['key']}: {m['reason']}" for m in missing)
        if config["on_missing"] == "stop":
            raise WorkflowError(f"missing inputs, nothing was run:\n{lines}\n"
                                "Fix the keys above, or set on_missing: skip to run what does not need them.")
        print(f"pri: the accuracy track is skipped for {sorted({m['teacher'] for m in missing})}:\n{lines}\n"
              "The efficiency track needs no weights and runs; report.html lists what was skipped.",
              file=sys.stderr)
    return ok, missing


ACTIVE_TEACHERS, MISSING = preflight()


def teacher_ckpt(w):
    return f"{R}/teachers/{w.teacher}/teacher.pt"


def pool_path(teacher, tag, seed, batch):
    return f"{R}/pools/{teacher}/{tag}/seed{seed}/batch{batch}.pt"


def pools_of(teacher, tag, seed):
    return [pool_path(teacher, tag, seed, b) for b in range(INV["batches"])]


def all_pools():
    return [p for t in ACTIVE_TEACHERS for tag in TAGS for s in SEEDS for p in pools_of(t, tag, s)]


def distill_path(teacher, tag, seed):
    return f"{R}/distill/{teacher}/{tag}/seed{seed}.json"


def accuracy_targets():
    return [distill_path(t, tag, s) for t in ACTIVE_TEACHERS for tag in TAGS for s in SEEDS]


def efficiency_targets():
    if not EFF["enabled"]:
        return []
    out = []
    for m in EFF["models"]:
        out += [f"{R}/efficiency/{m}/flops.json", f"{R}/efficiency/{m}/time.json"]
    return out


def final_targets():
    return [f"{R}/analysis/claims.csv"]


def all_cores(cluster_default=8):
    """Every core of a local run (a job that must not share the machine); on a cluster, where
    Snakemake has no total, the profile's cpus_per_task decides and this is only the default."""
    try:
        return workflow.cores
    except WorkflowError:
        return cluster_default


def device_args():
    return f"--device {config['device']}"


def write_report_after_run():
    """Write report.html after a successful run (snakemake --report, on the same config)."""
    if os.environ.get("PRI_NO_REPORT") or not all(os.path.exists(f) for f in final_targets()):
        return  # a partial run (--until, a single target) or a report run itself
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", workflow.main_snakefile, "--report", "report.html",
           "--nolock", "--cores", "1"]
    for cf in workflow.config_settings.configfiles or []:
        cmd += ["--configfile", str(cf)]
    logger.info("pri: writing report.html")
    r = subprocess.run(cmd, env={**os.environ, "PRI_NO_REPORT": "1"}, capture_output=True, text=True)
    if r.returncode != 0:
        logger.warning(f"pri: report.html could not be written:\n{r.stderr[-2000:]}")
    else:
        logger.info("pri: report.html written")
