"""The command lines of the workflow's jobs: each rule runs ``pri batch`` with the arguments built
here from the plan (one inversion job: every tag of a sweep for one seed and batch; one
distillation job: a student per tag; one quantisation job: every tag's pools of a seed). Config
values go to the commands as ``--key=value`` where they are free text (paths), so that no value
can become an option or split the batch.

``JobArgs`` is mixed into pri.workflow.plan.Plan, whose sweeps and config sections it reads."""
from __future__ import annotations

from pri.cli import batch_argv
from pri.core.runtime import derive_seed

# config keys passed to a command as --options of the same name (one source of names: the schema's
# defaults and the commands' defaults are checked against each other in tests/workflow/test_defaults.py)
DISTILL_KEYS = ("steps", "batch", "kd_runs", "probe_runs", "probe_l2", "probe_temperature", "optimizer", "lr",
                "momentum", "weight_decay", "schedule", "warmup", "temperature", "grad_clip", "augment", "augment_shift",
                "eval_every", "head_only", "val")
TRAIN_KEYS = ("epochs", "batch", "lr", "weight_decay", "warmup", "label_smoothing", "crop_pad", "hflip", "grad_clip",
              "seed")


def inversion_seed(seed: int, sweep: str, batch: int) -> int:
    """The seed of inversion job ``batch`` of seed ``seed`` in ``sweep``: the same for every tag (the
    methods of a seed are paired), different for every other (sweep, seed, batch)."""
    return derive_seed("inversion", seed, sweep, batch)


class JobArgs:
    """The pri commands of the plan's jobs (see the module's docstring)."""

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
