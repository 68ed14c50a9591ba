"""The jobs a workflow config asks for, and what can run: the library behind workflow/rules.

``Plan(config)`` checks every input cheaply (files exist, model names resolve; no dataset is
loaded), decides which teachers run which tasks, and answers the rules' questions: the pools of
a distillation, the arguments of an inversion, the targets of the run. Nothing here imports
Snakemake; tests build plans from plain dicts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import PriError
from .layout import paths
from .schedules import Spec

TASKS = ("distill", "quantize")


@dataclass
class Sweep:
    """One set of inversions of a teacher: its tags, seeds, jobs per seed and images per job."""
    name: str
    tags: list
    seeds: list
    batches: int
    images: dict  # tag -> images per inversion job
    distill_images: dict  # tag -> images a student sees (None: all of the pools)
    classes: tuple | None = None  # labels restricted to these classes (one-class distillation)


@dataclass
class Missing:
    teacher: str
    task: str
    key: str
    reason: str

    def as_dict(self) -> dict:
        return {"teacher": self.teacher, "task": self.task, "key": self.key, "reason": self.reason}


def inversion_seed(seed: int, batch: int) -> int:
    """The seed of inversion job ``batch`` of seed ``seed``."""
    return seed * 1000 + batch if batch else seed


@dataclass
class Plan:
    config: dict
    missing: list = field(default_factory=list)
    tasks: dict = field(default_factory=dict)  # teacher -> tasks it runs

    def __post_init__(self):
        c = self.config
        self.P = paths(c["run"])
        self.teachers = c["teachers"]
        self.inv, self.dis, self.eff = c["inversion"], c["distill"], c["efficiency"]
        self.tags = [Spec.parse(t, "inversion.methods").tag for t in self.inv["methods"]]
        self.seeds = [int(s) for s in self.inv["seeds"]]
        for tid, t in self.teachers.items():
            miss = self._missing_for_teacher(tid, t)
            self.missing += miss
            self.tasks[tid] = [] if miss else ["distill"]

    # ---------------------------------------------------------------------------------- checks
    def student_of(self, tid: str) -> tuple[str, str | None, str]:
        """(architecture, checkpoint or None, the config key that set the checkpoint) of a teacher's student."""
        t = self.teachers[tid]
        ck_key = f"teachers.{tid}.student_checkpoint" if t.get("student_checkpoint") else "distill.student_checkpoint"
        return (t.get("student") or self.dis["student"], t.get("student_checkpoint") or self.dis.get("student_checkpoint"),
                ck_key)

    def _missing_for_teacher(self, tid: str, t: dict) -> list[Missing]:
        from .data import check_dataset
        from .models import HUB, SMALL_VITS, known_model

        key = f"teachers.{tid}"
        out = []

        def miss(k, reason, task="all"):
            out.append(Missing(tid, task, k, reason))

        if not known_model(t["model"]):
            raise PriError(f"{key}.model", f"unknown model {t['model']!r} (a timm ViT name or one of the suite's small "
                           f"ViTs: {', '.join(sorted(SMALL_VITS))})")
        ck, init = t.get("checkpoint"), t.get("init_checkpoint")
        if ck and not os.path.isfile(ck):
            miss(f"{key}.checkpoint", f"file not found: {ck}")
        if not ck and init == HUB:
            out += [Missing(tid, "all", k, r) for k, r in _hub_missing(f"{key}.init_checkpoint", t["model"])]
        elif not ck and init and not os.path.isfile(init):
            miss(f"{key}.init_checkpoint", f"file not found: {init}")
        if not ck and not init and t["model"] not in SMALL_VITS:
            miss(f"{key}.checkpoint", f"no trained {t['model']} given: set {key}.checkpoint to a trained teacher, or "
                 f"{key}.init_checkpoint to ImageNet weights to fine-tune from (a path, or 'hub' for timm's weights "
                 "from the Hugging Face hub); only the suite's small ViTs are trained from scratch")
        student, s_ck, s_key = self.student_of(tid)
        if s_ck == HUB:
            out += [Missing(tid, "distill", k, r) for k, r in _hub_missing(s_key, student)]
        elif s_ck and not os.path.isfile(s_ck):
            miss(s_key, f"file not found: {s_ck}", "distill")
        splits = ["test"] + (["train"] if not ck else [])
        for split in splits:
            try:
                check_dataset(t["dataset"], t.get("data_root"), split, option=f"{key}.data_root")
            except PriError as e:
                miss(e.option, e.message)
                break
        return out

    @property
    def active(self) -> list[str]:
        """Teachers with at least one task to run."""
        return [t for t, tasks in self.tasks.items() if tasks]

    def runs(self, tid: str, task: str) -> bool:
        return task in self.tasks.get(tid, [])

    # ---------------------------------------------------------------------------------- sweeps
    def sweeps(self, tid: str) -> list[Sweep]:
        images = {tag: int(self.inv["images"]) for tag in self.tags}
        dis = {tag: self.dis.get("images") for tag in self.tags}
        return [Sweep("main", self.tags, self.seeds, int(self.inv["batches"]), images, dis)]

    def sweep(self, tid: str, name: str) -> Sweep:
        for s in self.sweeps(tid):
            if s.name == name:
                return s
        raise KeyError(f"teacher {tid} has no sweep {name!r}")

    # ---------------------------------------------------------------------------------- files
    def pools_of(self, tid: str, sweep: str, tag: str, seed: int) -> list[str]:
        s = self.sweep(tid, sweep)
        return [self.P.pool.format(teacher=tid, sweep=sweep, tag=tag, seed=seed, batch=b) for b in range(s.batches)]

    def all_pools(self) -> list[str]:
        return [p for tid in self.active for s in self.sweeps(tid) for tag in s.tags for seed in s.seeds
                for p in self.pools_of(tid, s.name, tag, seed)]

    def distill_targets(self) -> list[str]:
        return [self.P.distill.format(teacher=tid, sweep=s.name, tag=tag, seed=seed)
                for tid in self.active if self.runs(tid, "distill") for s in self.sweeps(tid)
                for tag in s.tags for seed in s.seeds]

    def efficiency_targets(self) -> list[str]:
        if not self.eff["enabled"]:
            return []
        return [self.P.efficiency.format(model=m, what=w) for m in self.eff["models"] for w in ("flops", "time")]

    def teacher_metrics(self) -> list[str]:
        return [self.P.teacher_metrics.format(teacher=t) for t in self.active]

    # ---------------------------------------------------------------------------------- arguments
    def invert_args(self, tid: str, sweep: str, tag: str, seed: int, batch: int) -> list[str]:
        s = self.sweep(tid, sweep)
        args = ["--model", self.teachers[tid]["model"], "--schedule", tag,
                "--iterations", self.inv["iterations"], "--batch", s.images[tag],
                "--lr", self.inv["lr"], "--tv-weight", self.inv["tv_weight"], "--dtype", self.config["dtype"],
                "--seed", inversion_seed(seed, batch), "--device", self.config["device"]]
        if "rerank_every" in Spec.parse(tag).method.options and self.inv.get("rerank_every"):
            args += ["--rerank-every", self.inv["rerank_every"]]
        return [str(a) for a in args]

    def distill_args(self, tid: str, sweep: str, tag: str, seed: int) -> list[str]:
        t = self.teachers[tid]
        student, s_ck, _ = self.student_of(tid)
        args = ["--dataset", t["dataset"], "--student", student, "--seed", seed, "--device", self.config["device"]]
        n = self.sweep(tid, sweep).distill_images[tag]
        if n is not None:
            args += ["--images", n]
        if t.get("data_root"):
            args += ["--data-root", t["data_root"]]
        if s_ck:
            args += ["--student-checkpoint", s_ck]
        args += cli_options(self.dis, DISTILL_KEYS)
        return [str(a) for a in args]

    def teacher_args(self, tid: str) -> list[str]:
        t = self.teachers[tid]
        args = ["--model", t["model"], "--dataset", t["dataset"], "--device", self.config["device"]]
        for key in ("data_root", "num_classes", "img_size", "checkpoint", "init_checkpoint"):
            if t.get(key) is not None and not (key == "init_checkpoint" and t.get("checkpoint")):
                args += [option_of(key), t[key]]
        if not t.get("checkpoint"):
            args += cli_options(t.get("train") or {}, TRAIN_KEYS)
        return [str(a) for a in args]

    def efficiency_args(self, what: str) -> list[str]:
        e = self.eff
        args = ["--img-size", e["img_size"], "--iterations", e["iterations"]]
        if what == "flops":
            args += ["--batch", e["batch"], "--schedules", *self.tags, "--what", "cost", "flops"]
        else:
            args += ["--batch", e["time_batch"] or e["batch"], "--schedules", *(e["time_tags"] or self.tags),
                     "--what", "time", "--device", self.config["device"]]
            args += cli_options(e, ("mode", "steps", "warmup", "repeats", "dtype"))
        return [str(a) for a in args]


# config keys passed to a command as --options of the same name (one source of names: the schema's
# defaults and the commands' defaults are checked against each other in tests/test_defaults.py)
DISTILL_KEYS = ("steps", "batch", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup", "temperature",
                "grad_clip", "augment", "augment_shift", "eval_every", "head_only")
TRAIN_KEYS = ("epochs", "batch", "lr", "weight_decay", "warmup", "label_smoothing", "crop_pad", "hflip", "grad_clip",
              "seed")


def option_of(key: str) -> str:
    return "--" + key.replace("_", "-")


def cli_options(section: dict, keys) -> list:
    """``--key value`` for each of ``keys`` set in a config section (booleans as bare flags when true)."""
    out = []
    for k in keys:
        v = section.get(k)
        if v is None or v is False:
            continue
        out += [option_of(k)] if v is True else [option_of(k), v]
    return out


def _hub_missing(key: str, model: str) -> list[tuple[str, str]]:
    """'hub' weights: fetched now, when the workflow is planned (on the submitting machine, so
    compute nodes without a network find them in the hub cache), or found in that cache."""
    from .models import hub_checkpoint

    try:
        hub_checkpoint(model, key)
    except PriError as e:
        return [(key, e.message)]
    return []
