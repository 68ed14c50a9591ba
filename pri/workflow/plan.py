"""The jobs a workflow config asks for, and what can run: the library behind workflow/rules.

``Plan(config)`` checks every input cheaply (files exist, model names resolve, every tag fits its
teacher; no dataset is loaded), decides which teachers run which tasks, and answers the rules'
questions: the pools of a distillation, the arguments of each command, the targets of the run.
Nothing here imports Snakemake; tests build plans from plain dicts.

Sweeps. Every teacher inverts the ``main`` sweep (inversion.methods x seeds x batches). Teachers
that distil may add controls: ``iso<B>`` (each method inverts as many images as B DMI images cost,
by the cost model) and ``class<C>`` (one-class inversion of class C). A seed pairs the methods: every
tag of a sweep and seed inverts from the same seed (init noise, augmentations), balances the same
class order over the seed's jobs, and its students share initialisation and data order.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from pri.cli import batch_argv
from pri.core.runtime import derive_seed
from pri.core.schedules import Spec
from pri.errors import PriError
from pri.workflow.layout import paths

TASKS = ("distill", "quantize")


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
class Missing:
    teacher: str
    task: str
    key: str
    reason: str

    def as_dict(self) -> dict:
        return {"teacher": self.teacher, "task": self.task, "key": self.key, "reason": self.reason}


def inversion_seed(seed: int, sweep: str, batch: int) -> int:
    """The seed of inversion job ``batch`` of seed ``seed`` in ``sweep``: the same for every tag (the
    methods of a seed are paired), different for every other (sweep, seed, batch)."""
    return derive_seed("inversion", seed, sweep, batch)


@dataclass
class Plan:
    config: dict
    check_inputs: bool = True  # False: plan as if every file were there (pricing a config, e.g. GPU hours)
    missing: list = field(default_factory=list)
    tasks: dict = field(default_factory=dict)  # teacher -> tasks it runs

    def __post_init__(self):
        c = self.config
        self.P = paths(c["run"])
        self.teachers = c["teachers"]
        self.inv, self.dis, self.eff = c["inversion"], c["distill"], c["efficiency"]
        self.ctl = c.get("controls") or {}
        self.quant = c.get("quantize") or {"enabled": False}
        self.tags = [Spec.parse(t, "inversion.methods").tag for t in self.inv["methods"]]
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
    def _check_cross_keys(self) -> None:
        """What no key can say alone, found when planning and named by config key: each teacher's
        model, image size, head and dataset fit together, each student cuts the teacher's images
        into the same patches, the efficiency track's models take its image size, no (w_bits,
        a_bits) setting is given twice, and no job is asked for more images than memory holds."""
        for tid in self.teachers:
            self._check_teacher_model(tid)
        if self.quant.get("enabled"):
            from pri.checks import settings_of

            keys = {"--w-bits": "quantize.w_bits", "--a-bits": "quantize.a_bits"}
            try:
                settings_of([int(b) for b in self.quant["w_bits"]], [int(b) for b in self.quant["a_bits"]])
            except PriError as e:
                raise PriError(keys.get(e.option, "quantize.w_bits"), _in_config_words(e.message, keys)) from e
        self._check_sizes()

    def _check_sizes(self) -> None:
        from pri import checks
        from pri.files.models import known_model

        checks.fits_memory(int(self.inv["images"]), "inversion.images", fix="(or raise inversion.batches)")
        checks.iterations(int(self.inv["iterations"]), "inversion.iterations")
        for i, b in enumerate((self.ctl.get("iso_compute") or {}).get("budgets") or []):
            checks.fits_memory(math.ceil(b), f"controls.iso_compute.budgets.{i}")
        for key in ("distill.images", "distill.batch", "quantize.calib_images"):
            section, name = key.split(".")
            value = (self.dis if section == "distill" else self.quant).get(name)
            if value is not None and (section == "distill" or self.quant.get("enabled")):
                checks.fits_memory(int(value), key)
        if not self.eff["enabled"]:
            return
        checks.iterations(int(self.eff["iterations"]), "efficiency.iterations")
        checks.fits_memory(int(self.eff["batch"]), "efficiency.batch")
        if self.eff.get("time_batch"):
            checks.fits_memory(int(self.eff["time_batch"]), "efficiency.time_batch")
        if not all(known_model(m) for m in self.eff["models"]):
            return  # _check_efficiency names the unknown one first
        for i, m in enumerate(self.eff["models"]):
            _config_dims(m, {"--model": f"efficiency.models.{i}", "--img-size": "efficiency.img_size"},
                         img_size=self.eff.get("img_size"))

    def _check_teacher_model(self, tid: str) -> None:
        from pri.files.data import dataset_info
        from pri.files.models import known_model

        t, key = self.teachers[tid], f"teachers.{tid}"
        if not known_model(t["model"]):
            return  # _missing_for_teacher names it with the models it knows
        keys = {"--model": f"{key}.model", "--img-size": f"{key}.img_size", "--num-classes": f"{key}.num_classes"}
        d = _config_dims(t["model"], keys, img_size=t.get("img_size"), num_classes=t.get("num_classes"))
        nc = dataset_info(t["dataset"])["num_classes"]
        if t.get("num_classes") is not None and nc is not None and int(t["num_classes"]) != nc:
            raise PriError(f"{key}.num_classes", f"{t['dataset']} has {nc} classes, not {t['num_classes']}: the "
                           f"teacher's head needs one output per class (set {nc}, or null for the dataset's)")
        if "distill" in (t.get("tasks") or TASKS):
            self._check_student_grid(tid, d)

    def _check_student_grid(self, tid: str, d) -> None:
        """The pools' masks name patches of the teacher's grid: the student must cut the same grid."""
        from pri.files.models import known_model, native_img_size

        t, student = self.teachers[tid], self.student_of(tid)[0]
        key = f"teachers.{tid}.student" if t.get("student") else "distill.student"
        if not known_model(student):
            return  # _missing_for_teacher names it
        img = int(t.get("img_size") or native_img_size(t["model"]))
        try:
            s = _config_dims(student, {"--model": key}, img_size=img, num_classes=d.num_classes)
        except PriError as e:
            raise PriError(key, f"the student of teachers.{tid} ({img}-px images): {e.message}") from e
        if (s.num_patches, s.patch) != (d.num_patches, d.patch):
            raise PriError(key, f"{student} cuts teachers.{tid}'s {img}-px images into {s.num_patches} patches of "
                           f"{s.patch} px, the teacher ({t['model']}) into {d.num_patches} of {d.patch} px: a pool's "
                           f"masks must mean the same patches for both; choose a student with {d.patch}-px patches")

    def _check_scratch_seeds(self) -> None:
        chosen = self.dis.get("scratch_seeds")
        if chosen is None:
            return
        if int(self.dis.get("probe_runs", 1)) == 0:
            raise PriError("distill.scratch_seeds", "with distill.probe_runs: 0 every seed needs the from-scratch "
                           "student (it is the only one): set distill.scratch_seeds to null")
        unknown = sorted(set(int(s) for s in chosen) - set(self.seeds))
        if unknown:
            raise PriError("distill.scratch_seeds", f"seeds {unknown} are not in inversion.seeds {self.seeds}")

    def student_of(self, tid: str) -> tuple[str, str | None, str]:
        """(architecture, checkpoint or None, the config key that set the checkpoint) of a teacher's student."""
        t = self.teachers[tid]
        ck_key = f"teachers.{tid}.student_checkpoint" if t.get("student_checkpoint") else "distill.student_checkpoint"
        return (t.get("student") or self.dis["student"], t.get("student_checkpoint") or self.dis.get("student_checkpoint"),
                ck_key)

    def _check_efficiency(self) -> None:
        from pri.files.models import known_model

        if not self.eff["enabled"]:
            return
        for i, m in enumerate(self.eff["models"]):
            if not known_model(m):
                raise PriError(f"efficiency.models.{i}", f"unknown model {m!r}: give a timm ViT name (e.g. "
                               "deit_tiny_patch16_224) or one of the suite's small ViTs")
        for key in ("tags", "time_tags"):
            for i, t in enumerate(self.eff.get(key) or []):
                Spec.parse(t, f"efficiency.{key}.{i}")
        from pri.measure.cost import dims_of

        for i, m in enumerate(self.eff.get("time_models") or []):
            if m not in self.eff["models"]:
                raise PriError(f"efficiency.time_models.{i}", f"{m!r} is not among efficiency.models")
        T, img = int(self.eff["iterations"]), self.eff.get("img_size")
        for what, key in (("flops", "batch"), ("time", "time_batch")):
            batch = self.efficiency_batch(what)
            tags_key = next((f"efficiency.{k}" for k in (("time_tags", "tags") if what == "time" else ("tags",))
                             if self.eff.get(k)), "inversion.methods")
            for model in self.efficiency_models(what):
                n = dims_of(model, img_size=img).num_patches
                for tag in self.efficiency_tags(what):
                    try:
                        Spec.parse(tag).build(n, T).validate(n, T, batch)
                    except PriError as e:
                        k = {"--iterations": "efficiency.iterations", "--prune-at": "efficiency.iterations",
                             "--batch": f"efficiency.{key}" if key == "batch" or self.eff.get(key) else
                             "efficiency.batch"}
                        raise PriError(k.get(e.option, tags_key),
                                       f"{tag} on {model} ({n} patches, T = {T}, {batch} images): {e.message}") from e

    def _missing_for_teacher(self, tid: str, t: dict) -> list[Missing]:
        from pri.files.data import check_dataset
        from pri.files.models import HUB, SMALL_VITS, known_model

        key = f"teachers.{tid}"
        out = []

        def miss(k, reason, task="all"):
            out.append(Missing(tid, task, k, reason))

        if not known_model(t["model"]):
            raise PriError(f"{key}.model", f"unknown model {t['model']!r} (a timm ViT name or one of the suite's small "
                           f"ViTs: {', '.join(sorted(SMALL_VITS))})")
        student, s_ck, s_key = self.student_of(tid)
        if not known_model(student):
            k = f"{key}.student" if t.get("student") else "distill.student"
            raise PriError(k, f"unknown model {student!r} (a timm ViT name or one of the suite's small ViTs: "
                           f"{', '.join(sorted(SMALL_VITS))})")
        ck, init = t.get("checkpoint"), t.get("init_checkpoint")
        if self.dis.get("head_only") and not s_ck:
            miss(s_key, "distill.head_only trains only a new head of a pretrained student: give the student's "
                 f"weights under {key}.student_checkpoint (a path, or 'hub')", "distill")
        if not self.check_inputs:
            return out
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
        # (distill.head_only without a student checkpoint fits a head on a random backbone: nothing to find)
        if s_ck == HUB:
            out += [Missing(tid, "distill", k, r) for k, r in _hub_missing(s_key, student)]
        elif s_ck and not os.path.isfile(s_ck):
            miss(s_key, f"file not found: {s_ck}", "distill")
        splits = ["test"] + (["train"] if not ck or self.quant.get("enabled") else [])
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
    def _dims(self, tid):
        from pri.measure.cost import dims_of

        t = self.teachers[tid]
        return dims_of(t["model"], img_size=t.get("img_size"), num_classes=t.get("num_classes"))

    def _check_tags(self, tid: str, tags, images: dict, key_images: str, key_tags: str, T: int) -> None:
        n = self._dims(tid).num_patches
        for tag in tags:
            try:
                Spec.parse(tag, key_tags).build(n, T, self._options(tag)).validate(n, T, images[tag])
            except PriError as e:
                key = {"--batch": key_images, "--iterations": "inversion.iterations",
                       "--prune-at": "inversion.iterations"}.get(e.option, key_tags)
                raise PriError(key, f"{tag} on teachers.{tid} ({n} patches, T = {T}, {images[tag]} images): "
                               f"{e.message}") from e

    def _options(self, tag: str) -> dict:
        if "rerank_every" in Spec.parse(tag).method.options and self.inv.get("rerank_every"):
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
            tags = [Spec.parse(t, "controls.iso_compute.tags").tag for t in iso["tags"]]
            imgs = {tag: self.iso_images(tid, tag, budget) for tag in tags}
            self._check_tags(tid, tags, imgs, "controls.iso_compute.budgets", "controls.iso_compute.tags", T)
            out.append(Sweep(f"iso{_num(budget)}", "iso", tags, [int(s) for s in iso.get("seeds") or self.seeds], 1,
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
            out.append(Sweep(f"class{c}", "oneclass", tags, [int(s) for s in one.get("seeds") or self.seeds], 1, imgs,
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
        return Spec.parse(tag).build(self._dims(tid).num_patches, int(self.inv["iterations"]), self._options(tag))

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

    def _check_balance(self, tid: str, tags, n: int, batches: int, key: str, every_class: bool) -> None:
        """``n`` images of each of ``tags``'s pools of a seed, the same class histogram for every tag in
        whole trajectories (pri.files.pool.class_histogram): ``n`` is a whole number of units (and, with
        ``every_class``, the same count for every class), and every tag inverts enough of each class."""
        K, u = self.inverted_classes(tid), self.balance_unit(tid, tags)
        step = K * u if every_class else u
        if n % step:
            from pri.files.pool import nearest_multiples

            why = (f"{K} classes x {u} images" if every_class else f"{u} images") + \
                f" ({u}: the least common multiple of the images per trajectory of {', '.join(tags)})"
            raise PriError(key, f"{n} images cannot give every method of teachers.{tid} the same class histogram in "
                           f"whole trajectories: use a multiple of {step} = {why}; nearest that work: "
                           f"{nearest_multiples(n, step)}")
        need = -(-n // (u * K)) * u  # the most images a class is dealt
        for tag in tags:
            have = self._per_class(tid, tag, int(self.inv["images"]), batches)
            if have < need:
                m = self._least_images(tid, tag, need, batches)
                raise PriError(key, f"{n} images need {need} of each class, but {tag} of teachers.{tid} inverts "
                               f"only {have} of some class per seed (inversion.images x inversion.batches over {K} "
                               f"classes): raise inversion.images to {m} or more, or lower {key}")

    def _least_images(self, tid: str, tag: str, need: int, batches: int) -> int:
        """The fewest inversion.images with ``need`` images of every class per seed (bisection: the
        count grows with the images, and a linear search would take as many steps as images)."""
        lo, hi = int(self.inv["images"]), max(1, int(self.inv["images"]))
        while self._per_class(tid, tag, hi, batches) < need:
            lo, hi = hi, hi * 2
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self._per_class(tid, tag, mid, batches) < need else (lo, mid)
        return hi

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
        per = {t: schedule_cost(d, Spec.parse(t).build(d.num_patches, T, self._options(t)), T)["total"]
               for t in ("dmi", tag)}
        s = Spec.parse(tag).build(d.num_patches, T, self._options(tag))
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
    def invert_args(self, tid: str, sweep: str, tag: str, seed: int, batch: int) -> list[str]:
        s = self.sweep(tid, sweep)
        args = ["--model", self.teachers[tid]["model"], "--schedule", tag,
                "--iterations", self.inv["iterations"], "--batch", s.images[tag],
                "--lr", self.inv["lr"], "--tv-weight", self.inv["tv_weight"], "--dtype", self.config["dtype"],
                "--seed", inversion_seed(seed, sweep, batch), "--label-seed", seed,
                "--part", batch, "--parts", s.batches, "--device", self.config["device"]]
        if s.classes:
            args += ["--classes", *s.classes]
        for k, v in self._options(tag).items():
            args += [option_of(k), v]
        return [str(a) for a in args]

    def distill_args(self, tid: str, sweep: str, tag: str, seed: int) -> list[str]:
        t = self.teachers[tid]
        student, s_ck, _ = self.student_of(tid)
        args = ["--dataset", t["dataset"], "--student", student, "--seed", seed, "--device", self.config["device"]]
        n = self.sweep(tid, sweep).distill_images[tag]
        if n is not None:
            args += ["--images", n, "--balance-unit", self.balance_unit(tid, self.sweep(tid, sweep).tags)]
        if t.get("data_root"):
            args.append(glued("--data-root", t["data_root"]))
        if s_ck:
            args.append(glued("--student-checkpoint", s_ck))
        args += cli_options(self.dis, DISTILL_KEYS)
        if not self.scratch_arm(seed):
            args += ["--kd-runs", 0]  # the verdict student alone (distill.scratch_seeds)
        return [str(a) for a in args]

    def scratch_arm(self, seed: int) -> bool:
        """Whether seed ``seed``'s distillation also trains the from-scratch student."""
        chosen = self.dis.get("scratch_seeds")
        return chosen is None or int(seed) in chosen

    def quantize_args(self, tid: str, seed: int | None) -> list[str]:
        t, q = self.teachers[tid], self.quant
        draws = q["draws"] if seed is not None else (q.get("baseline_draws") or q["draws"])  # None: the baselines
        args = ["--dataset", t["dataset"], "--w-bits", *q["w_bits"], "--a-bits", *q["a_bits"],
                "--calib-images", q["calib_images"], "--balance-unit", self.balance_unit(tid, self.quant_tags(tid)),
                "--draws", draws, "--pre-gather", q["pre_gather"],
                "--seed", 0 if seed is None else seed, "--device", self.config["device"]]
        if t.get("data_root"):
            args.append(glued("--data-root", t["data_root"]))
        if q.get("test_images"):
            args += ["--limit-test", q["test_images"]]
        if self.classes_of(tid):
            args += ["--classes", *self.classes_of(tid)]
        return [str(a) for a in args]

    # ---------------------------------------------------------------------------------- batched jobs
    def invert_job(self, tid: str, sweep: str, seed: int, batch: int, teacher_ckpt: str, threads: int) -> list[str]:
        """``pri batch`` arguments of one inversion job: every tag of a sweep, one seed and batch."""
        return batch_argv([["invert", *self.invert_args(tid, sweep, tag, seed, batch),
                             glued("--checkpoint", teacher_ckpt), "--threads", threads, "--no-progress",
                             "--out", self.P.pool.format(teacher=tid, sweep=sweep, tag=tag, seed=seed, batch=batch)]
                            for tag in self.sweep(tid, sweep).tags])

    def distill_job(self, tid: str, sweep: str, seed: int, teacher_ckpt: str, threads: int) -> list[str]:
        """``pri batch`` arguments of one distillation job: a student per tag of a sweep, one seed."""
        return batch_argv([["distill", "--pool", *self.pools_of(tid, sweep, tag, seed),
                            glued("--teacher", teacher_ckpt), "--teacher-model", self.teachers[tid]["model"],
                            *self.distill_args(tid, sweep, tag, seed), "--threads", threads, "--no-progress",
                            "--out", self.P.distill.format(teacher=tid, sweep=sweep, tag=tag, seed=seed)]
                           for tag in self.sweep(tid, sweep).tags])

    def quantize_job(self, tid: str, seed: int, teacher_ckpt: str, threads: int) -> list[str]:
        """``pri batch`` arguments of one quantisation job: every tag's pools of one seed."""
        return batch_argv([["quantize", glued("--teacher", teacher_ckpt),
                            "--pool", *self.pools_of(tid, "main", tag, seed), *self.quantize_args(tid, seed),
                            "--threads", threads, "--no-progress", "--no-fp",
                            "--out", self.P.quantize.format(teacher=tid, sweep="main", tag=tag, seed=seed)]
                           for tag in self.quant_tags(tid)])

    def quantize_baseline_job(self, tid: str, teacher_ckpt: str, threads: int) -> list[str]:
        return batch_argv([["quantize", glued("--teacher", teacher_ckpt), "--calibration", c,
                            *self.quantize_args(tid, None), "--threads", threads, "--no-progress",
                            "--out", self.P.quantize_baseline.format(teacher=tid, calibration=c)]
                           for c in ("noise", "real")])

    def teacher_args(self, tid: str) -> list[str]:
        t = self.teachers[tid]
        args = ["--model", t["model"], "--dataset", t["dataset"], "--device", self.config["device"]]
        for key in ("data_root", "num_classes", "img_size", "checkpoint", "init_checkpoint"):
            if t.get(key) is not None and not (key == "init_checkpoint" and t.get("checkpoint")):
                args.append(glued(option_of(key), t[key]))
        if not t.get("checkpoint"):
            args += cli_options(t.get("train") or {}, TRAIN_KEYS)
        return [str(a) for a in args]

    def efficiency_args(self, what: str) -> list[str]:
        e = self.eff
        args = ["--img-size", e["img_size"], "--iterations", e["iterations"]]
        args += ["--batch", self.efficiency_batch(what), "--schedules", *self.efficiency_tags(what)]
        if what == "flops":
            args += ["--what", "cost", "flops"]
        else:
            args += ["--what", "time", "--device", self.config["device"]]
            args += cli_options(e, ("mode", "steps", "warmup", "repeats", "dtype"))
        return [str(a) for a in args]


# config keys passed to a command as --options of the same name (one source of names: the schema's
# defaults and the commands' defaults are checked against each other in tests/test_defaults.py)
DISTILL_KEYS = ("steps", "batch", "kd_runs", "probe_runs", "probe_l2", "probe_temperature", "optimizer", "lr",
                "momentum", "weight_decay", "schedule", "warmup", "temperature", "grad_clip", "augment", "augment_shift",
                "eval_every", "head_only", "val")
TRAIN_KEYS = ("epochs", "batch", "lr", "weight_decay", "warmup", "label_smoothing", "crop_pad", "hflip", "grad_clip",
              "seed")


def option_of(key: str) -> str:
    return "--" + key.replace("_", "-")


def glued(option: str, value) -> str:
    """``--option=value``: one argument, so that a value (a path may hold any character) can neither
    become an option of the command (``--epochs=0.001``) nor split ``pri batch`` (``::``)."""
    return f"{option}={value}"


def cli_options(section: dict, keys) -> list:
    """``--key value`` for each of ``keys`` set in a config section (booleans as bare flags when true)."""
    out = []
    for k in keys:
        v = section.get(k)
        if v is None or v is False:
            continue
        out += [option_of(k)] if v is True else [option_of(k), v]
    return out


def _config_dims(name: str, keys: dict, img_size=None, num_classes=None):
    """pri.measure.cost.dims_of with errors named by config keys (``keys``: a command's option -> the key; the
    rest name keys["--model"]); a model that is not a ViT says so before any size is tried."""
    from pri.measure.cost import dims_of

    try:
        try:
            dims_of(name)
        except PriError as e:
            if e.option == "--model":
                raise
        return dims_of(name, img_size=img_size, num_classes=num_classes)
    except PriError as e:
        raise PriError(keys.get(e.option, keys["--model"]), _in_config_words(e.message, keys)) from e


def _in_config_words(message: str, keys: dict) -> str:
    """A command's message with its options replaced by the config keys that set them."""
    for option, key in keys.items():
        message = message.replace(option, key)
    return message


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")


def _hub_missing(key: str, model: str) -> list[tuple[str, str]]:
    """'hub' weights: fetched now, when the workflow is planned (on the submitting machine, so
    compute nodes without a network find them in the hub cache), or found in that cache."""
    from pri.files.models import hub_checkpoint

    try:
        hub_checkpoint(model, key)
    except PriError as e:
        return [(key, e.message)]
    return []

