"""Pre-flight: what a config asks for that cannot work, found while planning and named by config
key, before any job runs. Cross-key checks (a teacher's model, image size, head and dataset fit
together; the student cuts the same patches; every tag fits its teacher; classes balance; no job
asks for more than memory holds) raise PriError; inputs that are not there (files, datasets, hub
weights) become Missing entries that ``on_missing`` fails on or skips. Hub weights are looked up
in the local hub cache only; `python -m pri.workflow.preflight --fetch-hub` fetches them.

``Checks`` is mixed into pri.workflow.plan.Plan, whose config sections (``self.inv``, ``self.dis``,
...) and sweep questions it reads."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pri.errors import PriError

TASKS = ("distill", "quantize")


@dataclass
class Missing:
    teacher: str
    task: str
    key: str
    reason: str

    def as_dict(self) -> dict:
        return {"teacher": self.teacher, "task": self.task, "key": self.key, "reason": self.reason}


class Checks:
    """The plan's pre-flight checks (see the module's docstring)."""

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
                self.spec(t, f"efficiency.{key}.{i}")
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
                        self.spec(tag).build(n, T).validate(n, T, batch)
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
            out += [Missing(tid, "all", k, r) for k, r in _hub_missing(f"{key}.init_checkpoint", t["model"], self.fetch_hub)]
        elif not ck and init and not os.path.isfile(init):
            miss(f"{key}.init_checkpoint", f"file not found: {init}")
        if not ck and not init and t["model"] not in SMALL_VITS:
            miss(f"{key}.checkpoint", f"no trained {t['model']} given: set {key}.checkpoint to a trained teacher, or "
                 f"{key}.init_checkpoint to ImageNet weights to fine-tune from (a path, or 'hub' for timm's weights "
                 "from the Hugging Face hub); only the suite's small ViTs are trained from scratch")
        # (distill.head_only without a student checkpoint fits a head on a random backbone: nothing to find)
        if s_ck == HUB:
            out += [Missing(tid, "distill", k, r) for k, r in _hub_missing(s_key, student, self.fetch_hub)]
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

    def _check_tags(self, tid: str, tags, images: dict, key_images: str, key_tags: str, T: int) -> None:
        n = self._dims(tid).num_patches
        for tag in tags:
            try:
                self.spec(tag, key_tags).build(n, T, self._options(tag)).validate(n, T, images[tag])
            except PriError as e:
                key = {"--batch": key_images, "--iterations": "inversion.iterations",
                       "--prune-at": "inversion.iterations"}.get(e.option, key_tags)
                raise PriError(key, f"{tag} on teachers.{tid} ({n} patches, T = {T}, {images[tag]} images): "
                               f"{e.message}") from e

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


def _hub_missing(key: str, model: str, fetch: bool) -> list[tuple[str, str]]:
    """'hub' weights: found in the local hub cache, or (``fetch``: when asked, on the submitting
    machine, so that compute nodes without a network find them in the cache) fetched now."""
    from pri.files.models import hub_checkpoint

    try:
        hub_checkpoint(model, key, fetch)
    except PriError as e:
        return [(key, e.message)]
    return []


def main(argv=None) -> int:
    """``python -m pri.workflow.preflight --configfile FILE [--fetch-hub]``: what the workflow would
    find missing, without Snakemake; with --fetch-hub, 'hub' weights are fetched into the hub cache
    first (the only step of the suite that downloads). Exit 0: nothing missing; 1: something is
    (listed by config key); 2: the config itself is wrong."""
    import argparse
    import sys

    from pri.workflow.config import read
    from pri.workflow.plan import Plan

    ap = argparse.ArgumentParser(prog="python -m pri.workflow.preflight", description=main.__doc__.splitlines()[0])
    ap.add_argument("--configfile", required=True, help="a workflow config (config/*.yaml)")
    ap.add_argument("--fetch-hub", action="store_true", help="fetch 'hub' weights missing from the hub cache")
    a = ap.parse_args(argv)
    try:
        plan = Plan(read(a.configfile), fetch_hub=a.fetch_hub)
    except PriError as e:
        print(e.message if e.option == "config" else f"config key {e.option}: {e.message}", file=sys.stderr)
        return 2
    for m in plan.missing:
        print(f"missing for teachers.{m.teacher} ({m.task}): config key {m.key}: {m.reason}")
    print(f"{len(plan.missing)} input(s) missing" if plan.missing else "nothing missing: every input is there")
    return 1 if plan.missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
