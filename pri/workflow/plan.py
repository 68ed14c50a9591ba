"""The jobs a workflow config asks for, and what can run: the library behind workflow/rules.

``Plan(config)`` (a config filled with its defaults by pri.workflow.config.checked) runs the
pre-flight checks (pri.workflow.preflight: every input checked cheaply, no dataset loaded),
decides which teachers run which tasks, and answers the rules' questions: the sweeps, the pools
of a distillation, the targets of the run, and (pri.workflow.jobs) each job's command line.
Nothing here imports Snakemake; tests build plans from plain dicts.

Sweeps. Every teacher inverts the ``main`` sweep (inversion.methods x seeds x batches). Teachers
that distil may add controls: ``iso<B>`` (each method inverts as many images as B DMI images cost,
by the cost model) and ``class<C>`` (one-class inversion of class C). A seed pairs the methods: every
tag of a sweep and seed inverts from the same seed (init noise, augmentations), balances the same
class order over the seed's jobs, and its students share initialisation and data order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pri.core.schedules import Spec
from pri.errors import PriError
from pri.workflow.jobs import JobArgs
from pri.workflow.layout import paths, sweep_name
from pri.workflow.preflight import TASKS, Checks



@dataclass
class Sweep:
    """One set of inversions of a teacher: its tags, seeds, jobs per seed and images per job."""
    name: str
    kind: str  # main | iso | oneclass
    tags: list
    seeds: list
    batches: int
    images: dict  # tag -> images per inversion job
    distill_images: dict  # tag -> images a student sees (None: all of the pools)
    classes: tuple | None = None  # labels restricted to these classes (one-class distillation)
    budget: float | None = None  # iso: inversion compute in DMI images


@dataclass
class Plan(Checks, JobArgs):
    config: dict
    check_inputs: bool = True  # False: plan as if every file were there (pricing a config, e.g. GPU hours)
    fetch_hub: bool = False  # True: fetch 'hub' weights absent from the hub cache (pri.workflow.preflight --fetch-hub)
    missing: list = field(default_factory=list)
    tasks: dict = field(default_factory=dict)  # teacher -> tasks it runs
    specs: dict = field(default_factory=dict)  # method tag -> its Spec, parsed once (Plan.spec)

    def __post_init__(self):
        c = self.config
        self.P = paths(c["run"])
        self.teachers = c["teachers"]
        self.inv, self.dis, self.eff = c["inversion"], c["distill"], c["efficiency"]
        self.ctl = c.get("controls") or {}
        self.quant = c.get("quantize") or {"enabled": False}
        self.tags = [self.spec(t, "inversion.methods").tag for t in self.inv["methods"]]
        if len(set(self.tags)) != len(self.tags):
            raise PriError("inversion.methods", f"a tag appears twice: {self.inv['methods']}")
        self.seeds = [int(s) for s in self.inv["seeds"]]
        if len(set(self.seeds)) != len(self.seeds):
            raise PriError("inversion.seeds", f"a seed appears twice: {self.seeds}")
        for name in ("iso_compute", "one_class"):
            for i, t in enumerate((self.ctl.get(name) or {}).get("teachers") or []):
                if t not in self.teachers:
                    raise PriError(f"controls.{name}.teachers.{i}", f"no teacher {t!r} (teachers: "
                                   f"{', '.join(self.teachers)})")
        self._check_cross_keys()
        self._sweeps = {}
        for tid, t in self.teachers.items():
            wanted = list(t.get("tasks") or TASKS)
            miss = self._missing_for_teacher(tid, t)
            blocking = [m for m in miss if m.task == "all"]
            self.tasks[tid] = [] if blocking else [k for k in wanted if not any(m.task == k for m in miss)]
            self.missing += [m for m in miss if m.task == "all" or m.task in wanted]
            if self.tasks[tid]:
                self._sweeps[tid] = self._make_sweeps(tid)
        self._check_efficiency()
        self._check_scratch_seeds()

    # ---------------------------------------------------------------------------------- checks

    def student_of(self, tid: str) -> tuple[str, str | None, str]:
        """(architecture, checkpoint or None, the config key that set the checkpoint) of a teacher's student."""
        t = self.teachers[tid]
        ck_key = f"teachers.{tid}.student_checkpoint" if t.get("student_checkpoint") else "distill.student_checkpoint"
        return (t.get("student") or self.dis["student"], t.get("student_checkpoint") or self.dis.get("student_checkpoint"),
                ck_key)

    def spec(self, tag: str, key: str = "inversion.methods") -> Spec:
        """The Spec of a method tag, parsed once per plan (a tag that does not parse names ``key``)."""
        if tag not in self.specs:
            self.specs[tag] = Spec.parse(tag, key)
        return self.specs[tag]

    @property
    def active(self) -> list[str]:
        """Teachers with at least one task to run."""
        return [t for t, tasks in self.tasks.items() if tasks]

    def runs(self, tid: str, task: str) -> bool:
        return task in self.tasks.get(tid, [])

    # ---------------------------------------------------------------------------------- sweeps
    def _dims(self, tid):
        from pri.measure.cost import dims_of

        t = self.teachers[tid]
        return dims_of(t["model"], img_size=t.get("img_size"), num_classes=t.get("num_classes"))

    def _options(self, tag: str) -> dict:
        if "rerank_every" in self.spec(tag).method.options and self.inv.get("rerank_every"):
            return {"rerank_every": self.inv["rerank_every"]}
        return {}

    def _make_sweeps(self, tid: str) -> list[Sweep]:
        T = int(self.inv["iterations"])
        batches = int(self.teachers[tid].get("batches") or self.inv["batches"])
        images = {tag: int(self.inv["images"]) for tag in self.tags}
        self._check_tags(tid, self.tags, images, "inversion.images", "inversion.methods", T)
        dis = {tag: self.dis.get("images") for tag in self.tags}
        if self.dis.get("images") is not None and self.runs(tid, "distill"):
            self._check_balance(tid, self.tags, int(self.dis["images"]), batches, "distill.images", every_class=True)
        if self.quant.get("enabled") and self.runs(tid, "quantize"):
            qtags = self.quant.get("tags") or self.tags
            for tag in qtags:
                if tag not in self.tags:
                    raise PriError("quantize.tags", f"{tag} is not among inversion.methods")
            self._check_balance(tid, qtags, int(self.quant["calib_images"]), batches, "quantize.calib_images",
                                every_class=False)
            if len(self.quant["w_bits"]) != len(self.quant["a_bits"]) and 1 not in (len(self.quant["w_bits"]),
                                                                                     len(self.quant["a_bits"])):
                raise PriError("quantize.a_bits", "give one a_bits per w_bits (or a single value for all)")
        out = [Sweep("main", "main", self.tags, self.seeds, batches, images, dis, classes=self.classes_of(tid))]
        if not self.runs(tid, "distill"):
            return out
        def serves(ctl):
            return ctl.get("teachers") is None or tid in ctl["teachers"]

        iso = self.ctl.get("iso_compute") or {}
        for budget in (iso.get("budgets") or []) if serves(iso) else []:
            tags = [self.spec(t, "controls.iso_compute.tags").tag for t in iso["tags"]]
            imgs = {tag: self.iso_images(tid, tag, budget) for tag in tags}
            self._check_tags(tid, tags, imgs, "controls.iso_compute.budgets", "controls.iso_compute.tags", T)
            out.append(Sweep(sweep_name("iso", _num(budget)), "iso", tags, [int(s) for s in iso.get("seeds") or self.seeds], 1,
                             imgs, dict.fromkeys(tags), budget=budget))
        one = self.ctl.get("one_class") or {}
        if one.get("class") is not None and serves(one):
            c, v = int(one["class"]), int(one["v"])
            nc = self.num_classes(tid)
            if not 0 <= c < nc:
                raise PriError("controls.one_class.class", f"teachers.{tid} has classes 0..{nc - 1}, not {c}")
            tags = [Spec("dmi").tag, Spec("smi", v).tag, Spec("pri", v).tag]
            imgs = dict.fromkeys(tags, v * int(one["images_per_detach"]))
            self._check_tags(tid, tags, imgs, "controls.one_class.images_per_detach", "controls.one_class.v", T)
            out.append(Sweep(sweep_name("oneclass", c), "oneclass", tags, [int(s) for s in one.get("seeds") or self.seeds], 1, imgs,
                             dict.fromkeys(tags), classes=(c,)))
        return out

    def classes_of(self, tid: str) -> tuple | None:
        """The classes a teacher's main sweep inverts (teachers.<id>.classes; None: every class)."""
        cls = self.teachers[tid].get("classes")
        if cls is None:
            return None
        key, nc = f"teachers.{tid}.classes", self.num_classes(tid)
        if "distill" in (self.teachers[tid].get("tasks") or TASKS):
            raise PriError(key, "a teacher that distils inverts every class: give classes only to a teacher whose "
                           "tasks are [quantize]")
        if len(set(cls)) != len(cls) or not all(0 <= int(c) < nc for c in cls):
            raise PriError(key, f"give distinct classes of the teacher's 0..{nc - 1}, got {cls}")
        return tuple(int(c) for c in cls)

    def schedule(self, tid: str, tag: str):
        """The schedule ``tag`` runs on teacher ``tid`` (its patches, inversion.iterations, its options)."""
        return self.spec(tag).build(self._dims(tid).num_patches, int(self.inv["iterations"]), self._options(tag))

    def inverted_classes(self, tid: str) -> int:
        """How many classes a teacher's main sweep deals its trajectories to."""
        return len(self.classes_of(tid) or range(self.num_classes(tid)))

    def num_classes(self, tid: str) -> int:
        from pri.files.data import dataset_info

        t = self.teachers[tid]
        return int(t.get("num_classes") or dataset_info(t["dataset"])["num_classes"])

    def balance_unit(self, tid: str, tags) -> int:
        """The images per class unit in which a downstream task of ``tags`` selects: the least common
        multiple of their images per trajectory (PRI: v), so every method gets the same class histogram."""
        return math.lcm(*(self.schedule(tid, t).images_per_trajectory() for t in tags))

    def _per_class(self, tid: str, tag: str, images: int, batches: int) -> int:
        """Images of the least-served class in a seed's pools of ``tag`` (engine.assign_labels deals
        the trajectories to the classes in runs whose lengths differ by at most one)."""
        s = self.schedule(tid, tag)
        return batches * s.trajectories(images) // self.inverted_classes(tid) * s.images_per_trajectory()

    def pool_images(self, tid: str, tag: str, images: int) -> int:
        """Images one inversion job of ``tag`` writes when asked for ``images`` (PRI: whole trajectories)."""
        s = self.schedule(tid, tag)
        return s.trajectories(images) * s.images_per_trajectory()

    def iso_images(self, tid: str, tag: str, budget: float) -> int:
        """Images ``tag`` inverts for the compute of ``budget`` DMI images (the cost model's MACs per
        image, score forwards included), rounded down to whole trajectories."""
        from pri.measure.cost import schedule_cost

        d, T = self._dims(tid), int(self.inv["iterations"])
        per = {t: schedule_cost(d, self.spec(t).build(d.num_patches, T, self._options(t)), T)["total"]
               for t in ("dmi", tag)}
        s = self.spec(tag).build(d.num_patches, T, self._options(tag))
        k = s.images_per_trajectory()
        return max(k, int(math.floor(budget * per["dmi"] / per[tag] / k + 1e-9)) * k)

    def sweeps(self, tid: str) -> list[Sweep]:
        return self._sweeps.get(tid, [])

    def sweep(self, tid: str, name: str) -> Sweep:
        for s in self.sweeps(tid):
            if s.name == name:
                return s
        raise KeyError(f"teacher {tid} has no sweep {name!r}")

    def sweep_kinds(self) -> dict:
        """kind -> (tags, sweep names) over all teachers: the workflow has one inversion rule per kind."""
        out = {}
        for tid in self.active:
            for s in self.sweeps(tid):
                tags, names = out.setdefault(s.kind, ([], set()))
                tags += [t for t in s.tags if t not in tags]
                names.add(s.name)
        return out

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

    def quantize_targets(self) -> list[str]:
        if not self.quant.get("enabled"):
            return []
        out = []
        for tid in self.active:
            if not self.runs(tid, "quantize"):
                continue
            s = self.sweep(tid, "main")
            out += [self.P.quantize.format(teacher=tid, sweep="main", tag=tag, seed=seed)
                    for tag in self.quant_tags(tid) for seed in s.seeds]
            out += [self.P.quantize_baseline.format(teacher=tid, calibration=c) for c in ("noise", "real")]
        return out

    def quant_tags(self, tid: str) -> list[str]:
        tags = self.sweep(tid, "main").tags
        return [t for t in (self.quant.get("tags") or tags) if t in tags]

    def efficiency_targets(self) -> list[str]:
        if not self.eff["enabled"]:
            return []
        return [self.P.efficiency.format(model=m, what=w) for w in ("flops", "time") for m in self.efficiency_models(w)]

    # the efficiency track: what it counts ("flops") and what it times ("time"), defaults resolved here only
    def efficiency_models(self, what: str) -> list[str]:
        return (self.eff.get("time_models") or self.eff["models"]) if what == "time" else self.eff["models"]

    def efficiency_tags(self, what: str) -> list[str]:
        tags = self.eff.get("tags") or self.tags
        return (self.eff.get("time_tags") or tags) if what == "time" else tags

    def efficiency_batch(self, what: str) -> int:
        return int((self.eff.get("time_batch") or self.eff["batch"]) if what == "time" else self.eff["batch"])

    def teacher_metrics(self) -> list[str]:
        return [self.P.teacher_metrics.format(teacher=t) for t in self.active]

    # ---------------------------------------------------------------------------------- arguments

    def scratch_arm(self, seed: int) -> bool:
        """Whether seed ``seed``'s distillation also trains the from-scratch student."""
        chosen = self.dis.get("scratch_seeds")
        return chosen is None or int(seed) in chosen

    # ---------------------------------------------------------------------------------- batched jobs


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")
