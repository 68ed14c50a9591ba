"""What a run will cost before it runs: the jobs of every rule and their CPU seconds on this kind
of machine, priced from the plan (the same jobs Snakemake will run) and measured step times.

A step of each kind is timed on the job's own model (``measure``), at two batch sizes, and fitted as
``seconds = overhead + images * MACs-per-image / rate`` (the cost model's MACs, ``pri.measure.cost``), so a
stage with fewer active patches or a smaller batch is priced by its MACs. Three kinds of step:

- ``invert``: a forward and the input gradient (the inversion step, a frozen teacher);
- ``train``: a forward, the weight gradients and an optimiser step (teacher training, distillation);
- ``eval``: a forward without gradients (evaluations, teacher passes, calibration).

The workflow uses these figures for its Slurm resources (``resources_of``), from the calibration
stored in ``benchmarks/results/cpu`` (written by ``benchmarks/cost.py --measure``).
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, field

# images in the training and test splits of each dataset (the suite's loaders)
SPLIT_IMAGES = {"fashion_mnist": (54000, 10000), "digits": (1437, 360), "cifar10": (50000, 10000),
                "cifar100": (50000, 10000), "imagefolder": (1281167, 50000)}
JOB_START_SECONDS = 4.0  # a job's Python, torch and timm start-up and its model and data loading
KINDS = ("invert", "train", "eval")
# process start-up of an analysis and the efficiency track's FLOP counting (fvcore traces a forward per stage)
ANALYSIS_SECONDS = 20.0
AUGMENTATIONS = 18  # pri distill --augment: rolls of -1, 0, +1 patch on each axis, with and without a flip
PROBE_FIT_SECONDS = 1.0  # one L-BFGS fit of the verdict student's head (a few thousand rows of a few hundred features)
FLOPS_SECONDS_PER_TAG = 1.5


@dataclass
class StepModel:
    """seconds = overhead + images * macs / rate, for one kind of step of one model."""
    overhead: float
    rate: float  # MACs per second

    def seconds(self, images: float, macs: float) -> float:
        return self.overhead + images * macs / self.rate


@dataclass
class Rates:
    """Fitted step models: {model: {kind: StepModel}}, measured at ``threads`` threads."""
    threads: int
    models: dict = field(default_factory=dict)
    machine: str = ""

    def step(self, model: str, kind: str) -> StepModel:
        if model in self.models:
            return self.models[model][kind]
        # an unmeasured model: the rate of the largest measured one (MAC-bound), no overhead of its own
        big = max(self.models.values(), key=lambda m: m[kind].rate)
        return StepModel(big[kind].overhead, big[kind].rate)

    def to_json(self) -> dict:
        return {"threads": self.threads, "machine": self.machine,
                "models": {m: {k: vars(s) for k, s in ks.items()} for m, ks in self.models.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Rates":
        return cls(int(d["threads"]), {m: {k: StepModel(**s) for k, s in ks.items()} for m, ks in d["models"].items()},
                   d.get("machine", ""))


def macs(model, kind: str, active: int | None = None) -> float:
    """MACs of one image's step of ``kind`` at ``active`` patches (all when None); ``model``: a name
    or a built model."""
    from pri.measure.cost import dims_of, forward_macs

    d = dims_of(model)
    fwd = sum(forward_macs(d, d.num_patches if active is None else active).values())
    return fwd * {"invert": 2.0, "train": 3.0, "eval": 1.0}[kind]


def _time(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _step_fn(model, kind: str, b: int):
    import torch

    pe = model.patch_embed
    x = torch.randn(b, pe.proj.in_channels, *pe.img_size)
    if kind == "eval":
        model.eval()
        return lambda: torch.no_grad()(model)(x)
    if kind == "invert":
        model.eval().requires_grad_(False)
        xi = x.clone().requires_grad_(True)
        return lambda: model(xi).sum().backward()
    model.train().requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def train():
        opt.zero_grad()
        model(x).logsumexp(-1).mean().backward()
        opt.step()
    return train


def measure(models: list[str], threads: int, batches=(8, 64)) -> Rates:
    """Time each kind of step of each model at two batch sizes and fit the step models."""
    import platform

    import torch

    from pri.files.models import build_model

    torch.set_num_threads(threads)
    rates = Rates(threads, machine=f"{platform.machine()}, {os.cpu_count()} cores, {threads} threads")
    for name in models:
        model = build_model(name)
        rates.models[name] = {}
        sizes = batches if macs(name, "eval") < 1e8 else (2, 8)  # a DeiT: small batches keep this short
        for kind in KINDS:
            (b1, t1), (b2, t2) = [(b, _time(_step_fn(model, kind, b), 3 if b > 16 else 5)) for b in sizes]
            per_image = max((t2 - t1) / (b2 - b1), 1e-9)
            rates.models[name][kind] = StepModel(max(t1 - b1 * per_image, 0.0), macs(name, kind) / per_image)
    return rates


def load_rates(path: str) -> Rates:
    with open(path) as f:
        return Rates.from_json(json.load(f))


def save_rates(rates: Rates, path: str) -> None:
    from pri.files.io import atomic_write_json

    atomic_write_json(path, rates.to_json())


# ------------------------------------------------------------------------------------- pricing
def invert_seconds(step: StepModel, model: str, tag: str, iterations: int, images: int) -> float:
    """One inversion of ``images`` images of ``tag``: every active count's steps at its MACs."""
    from pri.core.schedules import build
    from pri.measure.cost import dims_of, schedule_profile

    n = dims_of(model).num_patches
    s = build(tag, n, iterations)
    b = s.trajectories(images)
    return sum(it * step.seconds(b, macs(model, "invert", k)) for k, it in schedule_profile(s, n, iterations)["steps"].items())


def _kept(model: str, tag: str) -> int:
    """The patches a pool image of ``tag`` keeps, on average (its nominal sparsity)."""
    from pri.core.schedules import Spec
    from pri.measure.cost import dims_of

    n = dims_of(model).num_patches
    return max(1, round(n * (1 - (Spec.parse(tag).nominal_sparsity or 0.0))))


def _batches(images: int, batch: int) -> int:
    return math.ceil(images / max(1, batch))


@dataclass
class Job:
    rule: str
    seconds: float  # on ``threads`` threads of this kind of machine
    threads: int
    memory_mb: float


@functools.cache
def _backbone_for(teacher_model: str):
    """The verdict student's backbone for a teacher model's patch grid, built once per model:
    building a DeiT-B per distillation job made the paper config's dry run take minutes."""
    from pri.core.vit import patch_size
    from pri.files.models import build_model
    from pri.tasks.probe import build_backbone

    t = build_model(teacher_model)
    bb = build_backbone(int(t.patch_embed.img_size[0]), patch_size(t), int(t.patch_embed.proj.in_channels))
    bb.reset_classifier(1)  # the cost model counts a model with a head; one output costs nothing
    return bb


class Estimate:
    """Every job a config runs (from its plan), with its CPU seconds. ``rates``: {threads: Rates}."""

    def __init__(self, plan, rates: dict, cores: int):
        self.plan, self.rates, self.cores = plan, rates, cores
        self.cfg = plan.config
        self.threads = int(self.cfg.get("threads") or 1)
        self.jobs: list[Job] = []
        for tid in plan.active:
            self._teacher(tid)
            for sw in plan.sweeps(tid):
                self._sweep(tid, sw)
            if plan.runs(tid, "quantize") and self.cfg["quantize"].get("enabled", True):
                self._quantize(tid)
        self._efficiency()
        self.jobs.append(Job("analysis", ANALYSIS_SECONDS, 1, 2000))

    def step(self, model: str, kind: str, threads: int) -> StepModel:
        r = self.rates.get(threads) or self.rates[min(self.rates, key=lambda t: abs(t - threads))]
        return r.step(model, kind)

    def _split(self, tid: str) -> tuple[int, int]:
        return SPLIT_IMAGES.get(self.plan.teachers[tid]["dataset"], (50000, 10000))

    def _teacher(self, tid: str) -> None:
        t, (n_train, n_test) = self.plan.teachers[tid], self._split(tid)
        model, th = t["model"], self.cores
        secs = JOB_START_SECONDS + _batches(n_test, 512) * self.step(model, "eval", th).seconds(512, macs(model, "eval"))
        if not t.get("checkpoint"):
            tr = t.get("train") or {}
            b = int(tr.get("batch", 128))
            steps = math.ceil(float(tr.get("epochs", 4)) * n_train / b)
            secs += steps * self.step(model, "train", th).seconds(b, macs(model, "train"))
        self.jobs.append(Job("teacher", secs, th, memory_mb(model, 128, "train")))

    def _sweep(self, tid: str, sw) -> None:
        model, T = self.plan.teachers[tid]["model"], int(self.cfg["inversion"]["iterations"])
        step = self.step(model, "invert", self.threads)
        per_job = JOB_START_SECONDS + sum(invert_seconds(step, model, tag, T, sw.images[tag]) for tag in sw.tags)
        biggest = max(sw.images.values())
        for _ in range(len(sw.seeds) * sw.batches):
            self.jobs.append(Job(f"invert_{sw.kind}", per_job, self.threads, memory_mb(model, biggest, "invert")))
        if self.plan.runs(tid, "distill"):
            student = self.plan.student_of(tid)[0]
            probe = self._probe_job(tid) if int(self.cfg["distill"].get("probe_runs", 0)) else 0.0
            for seed in sw.seeds:
                scratch = self.plan.scratch_arm(seed)
                per_job = JOB_START_SECONDS + probe + sum(self._student(tid, sw, tag, scratch) for tag in sw.tags)
                self.jobs.append(Job(f"distill_{sw.kind}", per_job, self.threads,
                                     memory_mb(student, int(self.cfg["distill"]["batch"]), "train")))

    def _student(self, tid: str, sw, tag: str, scratch: bool = True) -> float:
        """One tag's distillation: the teacher's passes over its images (every augmentation), the
        from-scratch students (``scratch``) and the verdict student's heads."""
        d, model = self.cfg["distill"], self.plan.teachers[tid]["model"]
        student = self.plan.student_of(tid)[0]
        images = sw.distill_images[tag] or self.plan.pool_images(tid, tag, sw.images[tag]) * sw.batches
        rows = images * (AUGMENTATIONS if d.get("augment") else 1)
        n_test = int(d.get("limit_test") or self._split(tid)[1])
        steps, b, kept = int(d["steps"]), int(d["batch"]), _kept(model, tag)
        every = int(d.get("eval_every") or 0)
        evals = (steps - 1) // every + 1 if every else 1
        train = steps * self.step(student, "train", self.threads).seconds(b, macs(student, "train", kept))
        test = evals * _batches(n_test, 512) * self.step(student, "eval", self.threads).seconds(512, macs(student, "eval"))
        eval_step = self.step(model, "eval", self.threads)
        teacher = _batches(rows, 512) * eval_step.seconds(512, macs(model, "eval", kept))
        probe = 0.0
        if int(d.get("probe_runs", 0)):  # the backbone's features of every row, then the heads' fits
            probe = _batches(rows, 512) * eval_step.seconds(512, macs(self._backbone(tid), "eval", kept))
            probe += int(d["probe_runs"]) * PROBE_FIT_SECONDS
        return (int(d.get("kd_runs", 1)) * (train + test) if scratch else 0.0) + teacher + probe

    def _backbone(self, tid: str):
        """The verdict student's backbone for a teacher's patch grid (priced at the teacher's rate)."""
        return _backbone_for(self.plan.teachers[tid]["model"])

    def _probe_job(self, tid: str) -> float:
        """Once per distillation job: the backbone's features and the teacher's logits of the test
        (and validation) images, shared by every tag of the job."""
        d, model = self.cfg["distill"], self.plan.teachers[tid]["model"]
        n = int(d.get("limit_test") or self._split(tid)[1]) * (2 if d.get("val") else 1)
        eval_step = self.step(model, "eval", self.threads)
        return _batches(n, 512) * (eval_step.seconds(512, macs(self._backbone(tid), "eval"))
                                   + eval_step.seconds(512, macs(model, "eval")))

    def _quantize(self, tid: str) -> None:
        q, model = self.cfg["quantize"], self.plan.teachers[tid]["model"]
        n_test = int(q.get("test_images") or self._split(tid)[1])
        settings, draws = max(len(q["w_bits"]), len(q["a_bits"])), int(q.get("draws", 1))
        one = _batches(n_test, 512) * self.step(model, "eval", self.threads).seconds(512, macs(model, "eval"))
        one *= QUANT_OVER_FP
        tags = self.plan.quant_tags(tid)
        for _ in self.plan.sweep(tid, "main").seeds:
            self.jobs.append(Job("quantize", JOB_START_SECONDS + len(tags) * settings * draws * one, self.threads,
                                 memory_mb(model, 512, "eval")))
        base_draws = int(q.get("baseline_draws") or draws)
        self.jobs.append(Job("quantize_baseline", JOB_START_SECONDS + (2 * settings * base_draws + 1) * one, self.threads,
                             memory_mb(model, 512, "eval")))

    def _efficiency(self) -> None:
        e, plan = self.cfg["efficiency"], self.plan
        if not e.get("enabled", True):
            return
        for model in plan.efficiency_models("flops"):
            self.jobs.append(Job("efficiency_flops", JOB_START_SECONDS + FLOPS_SECONDS_PER_TAG
                                 * len(plan.efficiency_tags("flops")), 1, memory_mb(model, 1, "eval")))
        reps = (int(e.get("warmup", 1)) + int(e.get("steps", 1))) * int(e.get("repeats", 3))
        for model in plan.efficiency_models("time"):
            step = self.step(model, "invert", self.cores)
            secs = JOB_START_SECONDS
            for tag in plan.efficiency_tags("time"):
                secs += _stage_sampled(step, model, tag, int(e["iterations"]), plan.efficiency_batch("time"), reps)
            self.jobs.append(Job("efficiency_time", secs, self.cores, memory_mb(model, plan.efficiency_batch("time"),
                                                                                 "invert")))

    def by_rule(self) -> dict:
        out: dict = {}
        for j in self.jobs:
            r = out.setdefault(j.rule, {"jobs": 0, "seconds": 0.0, "max_seconds": 0.0, "memory_mb": 0.0})
            r["jobs"] += 1
            r["seconds"] += j.seconds
            r["max_seconds"] = max(r["max_seconds"], j.seconds)
            r["memory_mb"] = max(r["memory_mb"], j.memory_mb)
        return out

    def wall_seconds(self) -> float:
        """Wall-clock of ``snakemake --cores <cores>``: the teacher first (on every core), then the
        other jobs sharing the cores, then the analysis."""
        first = sum(j.seconds for j in self.jobs if j.rule == "teacher")
        last = sum(j.seconds for j in self.jobs if j.rule == "analysis")
        rest = sum(j.seconds * min(j.threads, self.cores) for j in self.jobs if j.rule not in ("teacher", "analysis"))
        return first + rest / self.cores + last


QUANT_OVER_FP = 1.5  # a fake-quant evaluation costs about 1.5x a float one (measured on CPU, pri quantize)


def _stage_sampled(step: StepModel, model: str, tag: str, iterations: int, images: int, reps: int) -> float:
    """Timing by stage sampling: each distinct active count's step, ``reps`` times."""
    from pri.core.schedules import build
    from pri.measure.cost import dims_of, schedule_profile

    n = dims_of(model).num_patches
    s = build(tag, n, iterations)
    b = s.trajectories(images)
    return sum(reps * step.seconds(b, macs(model, "invert", k)) for k in schedule_profile(s, n, iterations)["steps"])


def memory_mb(model: str, batch: int, kind: str) -> float:
    """Peak memory of a job: the process (torch, data) plus the activations a step keeps for its
    backward (about 24 floats per token and width per block) and, for training, weights, gradients and
    optimiser state, with a margin of 1.5."""
    from pri.measure.cost import dims_of

    d = dims_of(model)
    tokens = d.num_patches + d.prefix
    act = batch * tokens * d.embed_dim * d.depth * (24 if kind != "eval" else 4) * 4
    params = d.depth * 12 * d.embed_dim ** 2 * 4 * (4 if kind == "train" else 1)
    return 1500 + 1.5 * (act + params) / 2 ** 20


MAX_RUNTIME_MIN = 12 * 60  # the longest a job asks for: a GPU job of the paper scale (the CPU price is an upper bound)


def workflow_resources(plan, rates_path: str) -> dict:
    """Slurm resources of each rule, from the priced jobs: runtime (minutes) twice the longest job's
    CPU time on one thread plus 15 minutes, at most MAX_RUNTIME_MIN; memory the largest job's
    estimate. Without the measured step times: the profile's defaults."""
    if not os.path.exists(rates_path):
        return {}
    with open(rates_path) as f:
        rates = {int(k): Rates.from_json(v) for k, v in json.load(f).items()}
    out = {}
    for rule, r in Estimate(plan, rates, cores=1).by_rule().items():
        minutes = min(MAX_RUNTIME_MIN, 15 + math.ceil(2 * r["max_seconds"] / 60))
        out[rule] = {"runtime": minutes, "mem_mb": int(math.ceil(r["memory_mb"] / 100) * 100)}
    return out
