"""Wall-clock of the inversion loop per generated image.

Two modes; every result carries its label in ``mode``:

- ``full``: the real engine loop (``Inverter.run``), repeated ``repeats`` times after ``warmup``
  dense warm-up steps on a throw-away inverter; the median of the ledger's ``wall_seconds /
  images_out``. The ledger times the loop only (device-synchronised; no model load, no I/O),
  including what the loop does at events (scores, emitting images, new stages) and, on a GPU,
  each stage's eager warm-up steps and CUDA-graph capture.
- ``stage-sampled``: for every distinct active count ``k`` of the schedule, ``warmup`` steps
  of ``Inverter.stage_stepper(k)`` (the loop's own step code; on a GPU the stage is captured
  as a CUDA graph inside the warm-up, which is therefore at least ``graph_warmup + 1`` steps;
  each new inverter first takes two steps at one active patch, so that one-off costs such as
  Adam's state do not land in a stage; on a CPU a new shape costs nothing extra, and
  ``warmup = 0`` is fine there) and then ``repeats`` timed blocks of ``steps`` steps,
  each block device-synchronised at both ends; the step time is the median over blocks of the
  block time / ``steps``. Score forwards are timed the same way at the counts where the schedule
  reads scores (random scores cost nothing and count 0). The loop time is the sum over
  iterations of the step time at that iteration's count plus the score forwards, and it is
  divided by the images out. This is how paper scale (T = 4000, batch 128) is measured where the
  loop cannot run in full, and it excludes warm-up and capture.

A step's time depends only on the active count and the number of trajectories, so stage timings
are shared between schedules with the same trajectories (:class:`StageSampler`).

Peak memory: on CUDA ``max_memory_allocated`` (per stage and per schedule); on the CPU the
process's maximum resident set (``process_max_rss``), which only grows and is not per schedule.
"""
from __future__ import annotations

import gc
import resource
import statistics
import time
from dataclasses import replace

import torch

from pri.core.engine import InversionConfig, Inverter, Teacher
from pri.core.runtime import device_name, resolve_device, sync
from pri.core.runtime import progress as progress_bar
from pri.core.schedules import DMI, IdealSMI, Schedule
from pri.core.vit import num_patches
from pri.errors import PriError
from pri.measure.cost import schedule_profile

MODES = ("full", "stage-sampled")
# defaults of the timing functions, `pri efficiency` and the workflow's efficiency.* keys (one table)
STEPS, WARMUP, REPEATS = 2, 1, 3


def resolve_mode(mode: str, device: torch.device) -> str:
    if mode == "auto":
        return "full" if device.type == "cuda" else "stage-sampled"
    if mode not in MODES:
        raise PriError("--mode", f"unknown timing mode {mode!r}: choose full, stage-sampled or auto")
    return mode


def check_counts(steps: int, warmup: int, repeats: int) -> None:
    if steps < 1:
        raise PriError("--steps", f"must be >= 1 (got {steps})")
    if warmup < 0:
        raise PriError("--warmup", f"must be >= 0 (got {warmup})")
    if repeats < 1:
        raise PriError("--repeats", f"must be >= 1 (got {repeats})")



def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_max_rss"


class StageSampler:
    """Times the inversion step at (trajectories, active count), each pair once.

    One inverter per trajectory count (an SMI* schedule at the full count, so that it reads real
    scores); ``stage_stepper(k)`` gives the loop's own step at ``k`` active patches."""

    def __init__(self, teacher: Teacher, cfg: InversionConfig, steps: int = STEPS, warmup: int = WARMUP,
                 repeats: int = REPEATS):
        check_counts(steps, warmup, repeats)
        self.teacher, self.cfg = teacher, replace(cfg, progress=False)
        self.steps, self.warmup, self.repeats = steps, warmup, repeats
        self.n = num_patches(teacher.model)
        self.device = resolve_device(cfg.device)
        self._inv: dict = {}
        self.steps_cache: dict = {}
        self.score_cache: dict = {}

    def inverter(self, b: int) -> Inverter:
        if b not in self._inv:
            inv = Inverter(self.teacher, IdealSMI(self.n), replace(self.cfg, batch=b))
            # first steps of a new inverter pay one-off costs (Adam state, allocator, threads):
            # pay them at one active patch, so a stage's warm-up only has to cover its own shape
            st = inv.stage_stepper(1)
            for _ in range(2):
                st()
            sync(inv.device)
            self._inv[b] = inv
        return self._inv[b]

    def effective_warmup(self, inv: Inverter) -> int:
        # on a GPU the stage is captured at step graph_warmup: keep capture out of the timed steps
        return max(self.warmup, inv.cfg.graph_warmup + 1) if inv.use_graphs else self.warmup

    def step(self, b: int, k: int) -> dict:
        key = (b, k)
        if key in self.steps_cache:
            return self.steps_cache[key]
        inv = self.inverter(b)
        dev = inv.device
        sync(dev)
        _reset_peak(dev)
        stepper = inv.stage_stepper(k)
        w = self.effective_warmup(inv)
        for _ in range(w):
            stepper()
        samples = []
        for _ in range(self.repeats):
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(self.steps):
                stepper()
            sync(dev)
            samples.append((time.perf_counter() - t0) / self.steps)
        peak, kind = _peak(dev)
        del stepper
        gc.collect()
        r = {"active": k, "trajectories": b, "step_seconds": statistics.median(samples), "step_samples": samples,
             "warmup": w, "steps": self.steps, "repeats": self.repeats, "peak_memory_mb": peak,
             "peak_memory_kind": kind, "cuda_graphs": inv.use_graphs}
        self.steps_cache[key] = r
        return r

    def score(self, b: int, k: int) -> dict:
        key = (b, k)
        if key in self.score_cache:
            return self.score_cache[key]
        inv = self.inverter(b)
        dev = inv.device
        g = torch.Generator().manual_seed(k)
        active = torch.stack([torch.randperm(self.n, generator=g)[:k].sort().values for _ in range(b)]).to(dev)
        for _ in range(max(1, min(self.warmup, 2))):
            inv.score(active, 0)
        samples = []
        for _ in range(self.repeats):
            sync(dev)
            t0 = time.perf_counter()
            inv.score(active, 0)
            sync(dev)
            samples.append(time.perf_counter() - t0)
        r = {"active": k, "trajectories": b, "seconds": statistics.median(samples), "samples": samples}
        self.score_cache[key] = r
        return r

    def plan(self, schedule: Schedule, iterations: int) -> tuple[int, dict]:
        b = schedule.trajectories(self.cfg.batch)
        return b, schedule_profile(schedule, self.n, iterations)

    def time_schedule(self, schedule: Schedule, iterations: int) -> dict:
        schedule.validate(self.n, iterations, self.cfg.batch)
        b, prof = self.plan(schedule, iterations)
        stages, scores = [], []
        loop = 0.0
        for k, it in prof["steps"].items():
            r = self.step(b, k)
            stages.append({**r, "iterations": it})
            loop += r["step_seconds"] * it
        for k, cnt in prof["scores"].items():
            r = self.score(b, k)
            scores.append({**r, "count": cnt})
            loop += r["seconds"] * cnt
        images = b * schedule.images_per_trajectory()
        peak = max(s["peak_memory_mb"] for s in stages)
        # one integrated loop per repeat (the r-th timed block of every stage): the spread of the estimate
        per_repeat = [(sum(st["step_samples"][r] * st["iterations"] for st in stages)
                       + sum(sc["samples"][r] * sc["count"] for sc in scores)) / images for r in range(self.repeats)]
        return {
            "mode": "stage-sampled",
            "seconds_per_image": loop / images,
            "seconds_per_image_samples": per_repeat,
            "loop_seconds": loop,
            "images_out": images,
            "trajectories": b,
            "iterations": iterations,
            "stages": stages,
            "score_forwards": scores,
            "score_seconds": sum(s["seconds"] * s["count"] for s in scores),
            "peak_memory_mb": peak,
            "peak_memory_kind": stages[0]["peak_memory_kind"],
            "steps": self.steps, "warmup": self.warmup, "repeats": self.repeats,
            "cuda_graphs": stages[0]["cuda_graphs"],
            "device": device_name(self.device),
            "dtype": self.cfg.dtype,
        }


def time_full(teacher: Teacher, schedule: Schedule, cfg: InversionConfig, warmup: int = WARMUP, repeats: int = REPEATS,
              tick=None) -> dict:
    """The real loop, ``repeats`` times; median seconds per generated image."""
    check_counts(1, warmup, repeats)
    cfg = replace(cfg, progress=False)
    n = num_patches(teacher.model)
    schedule.validate(n, cfg.iterations, cfg.batch)
    b = schedule.trajectories(cfg.batch)
    if warmup:
        inv = Inverter(teacher, DMI(), replace(cfg, batch=b))
        st = inv.stage_stepper(n)
        for _ in range(warmup):
            st()
        sync(inv.device)
        del st, inv
        gc.collect()
    per, walls, peaks, ledger = [], [], [], None
    for _ in range(repeats):
        inv = Inverter(teacher, schedule, cfg)
        pool = inv.run()
        ledger = pool["ledger"]
        walls.append(ledger["wall_seconds"])
        per.append(ledger["wall_seconds"] / ledger["images_out"])
        peaks.append(ledger["peak_memory_mb"])
        del inv, pool
        gc.collect()
        if tick:
            tick()
    return {
        "mode": "full",
        "seconds_per_image": statistics.median(per),
        "seconds_per_image_samples": per,
        "loop_seconds": statistics.median(walls),
        "loop_seconds_samples": walls,
        "images_out": ledger["images_out"],
        "trajectories": b,
        "iterations": cfg.iterations,
        "peak_memory_mb": max(peaks),
        "peak_memory_kind": ledger["peak_memory_kind"],
        "warmup": warmup, "repeats": repeats,
        "cuda_graphs": ledger["cuda_graphs"],
        "device": ledger["device"],
        "dtype": cfg.dtype,
    }


def time_schedules(teacher: Teacher, schedules: dict, cfg: InversionConfig, mode: str = "auto", steps: int = STEPS,
                   warmup: int = WARMUP, repeats: int = REPEATS, progress: bool = True) -> dict:
    """Time many schedules on one teacher: ``{tag: result}``. Stage-sampled timings of equal
    (trajectories, active count) are shared between schedules."""
    check_counts(steps, warmup, repeats)
    device = resolve_device(cfg.device)
    mode = resolve_mode(mode, device)
    out = {}
    if mode == "full":
        bar = progress_bar(len(schedules) * repeats, progress, "time (full)", unit="run")
        for tag, s in schedules.items():
            bar.set_postfix_str(tag, refresh=False)
            out[tag] = time_full(teacher, s, cfg, warmup=warmup, repeats=repeats, tick=lambda: bar.update(1))
        bar.close()
        return out
    sampler = StageSampler(teacher, cfg, steps=steps, warmup=warmup, repeats=repeats)
    for s in schedules.values():  # validate before any timing
        s.validate(sampler.n, cfg.iterations, cfg.batch)
    seen_steps, seen_scores = set(), set()
    for s in schedules.values():
        b, prof = sampler.plan(s, cfg.iterations)
        seen_steps |= {(b, k) for k in prof["steps"]}
        seen_scores |= {(b, k) for k in prof["scores"]}
    bar = progress_bar(len(seen_steps) + len(seen_scores), progress, "time (stage-sampled)", unit="stage")
    for tag, s in schedules.items():
        bar.set_postfix_str(tag, refresh=False)
        before = len(sampler.steps_cache) + len(sampler.score_cache)
        out[tag] = sampler.time_schedule(s, cfg.iterations)
        bar.update(len(sampler.steps_cache) + len(sampler.score_cache) - before)
    bar.close()
    return out


def time_schedule(teacher: Teacher, schedule: Schedule, cfg: InversionConfig, mode: str = "auto", steps: int = STEPS,
                  warmup: int = WARMUP, repeats: int = REPEATS, progress: bool = False) -> dict:
    return time_schedules(teacher, {"schedule": schedule}, cfg, mode, steps, warmup, repeats, progress)["schedule"]
