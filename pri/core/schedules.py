"""Schedules and the one vocabulary of methods.

The engine runs one loop. Before iteration ``t`` (that is, after ``t`` optimisation steps) a
schedule may act: read patch scores on an un-augmented forward, change the active set, and
emit output images (a set of patch indices per trajectory whose current pixels become one
sparse synthetic image). A new method is a new schedule, not a new loop.

Every method has a tag (``dmi``, ``smi_default``, ``smi_v4``, ``pri_v4``, ``pri_random_v4``,
``smi_rerank_v4``, ``dmi_updates_v4``, ``smi_star_v4``, ...). :class:`Spec` parses a tag, formats
it back, says which options go with it and builds its schedule; :data:`REGISTRY` holds one
:class:`Method` per tag stem. Nothing else in the suite builds or splits a tag: adding a method is
one schedule class and one ``register(Method(...))`` line.

Counts per iteration are also available analytically (``active_counts``) for the cost model.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from pri.errors import PriError

SMI_PUBLIC_PRUNE_AT = (50, 100, 200, 300)
SMI_PUBLIC_RATIO = 0.3
SMI_PUBLIC_T = 4000
SMI_PRUNES = 4
SCORES = ("cls_attn", "random")


def keep_count(k: int, ratio: float) -> int:
    """Patches kept when the lowest-scoring fraction ``ratio`` of ``k`` is pruned (floor, >= 1)."""
    return max(1, int(math.floor(k * (1.0 - ratio) + 1e-9)))


def matched_ratio(v: int, prunes: int = SMI_PRUNES) -> float:
    """Per-prune ratio r with (1-r)^prunes = 1/v: SMI at PRI's sparsity 1 - 1/v."""
    return 1.0 - (1.0 / v) ** (1.0 / prunes)


def matched_keep(n: int, v: int) -> int:
    """PRI's mean patches per image at division factor ``v``: N / v, rounded half up."""
    return max(1, int(math.floor(n / v + 0.5)))


def matched_counts(n: int, v: int, prunes: int = SMI_PRUNES) -> list[int]:
    """Active counts after each of SMI's ``prunes`` prunes at matched sparsity: geometric from ``n``
    to exactly :func:`matched_keep` (rounded, strictly decreasing where the counts allow)."""
    end = matched_keep(n, v)
    out, last = [], n
    for i in range(1, prunes + 1):
        k = end if i == prunes else int(round(n * (end / n) ** (i / prunes)))
        k = min(max(k, end), last - 1 if last > end else end)
        out.append(k)
        last = k
    return out


def scaled_prune_at(iterations: int, base=SMI_PUBLIC_PRUNE_AT, base_t: int = SMI_PUBLIC_T) -> list[int]:
    """SMI's public prune iterations (50/100/200/300 of 4000) scaled to ``iterations``,
    kept strictly increasing and inside (0, iterations)."""
    out, last = [], 0
    for p in base:
        q = max(last + 1, int(round(p * iterations / base_t)))
        if q >= iterations:
            break
        out.append(q)
        last = q
    return out


@dataclass
class Event:
    """What a schedule does before an iteration."""
    new_active: torch.Tensor | None  # [B, K'] patch indices that stay in the forward pass (None: nothing left)
    emitted: list = field(default_factory=list)  # [B, k] index sets whose current pixels form output images


def _rank(score: torch.Tensor) -> torch.Tensor:
    """Positions sorted by descending score (stable: ties keep the lower position first)."""
    return torch.sort(score, dim=1, descending=True, stable=True).indices


def top_patches(candidates: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` highest-scoring of ``candidates`` ([B, K] patch indices scored by ``score`` [B, K]),
    in increasing patch order."""
    pos = torch.sort(_rank(score)[:, :k], dim=1).values
    return candidates.gather(1, pos)


class Schedule:
    method = "base"
    score = "cls_attn"

    def trajectories(self, batch: int) -> int:
        return batch

    def images_per_trajectory(self) -> int:
        return 1

    def run_length(self, iterations: int) -> int:
        """Iterations actually run (PRI stops at t_v = v * floor(T / v))."""
        return iterations

    def event_iterations(self, iterations: int, n: int) -> list[int]:
        return []

    def needs_score(self, t: int) -> bool:
        return self.score == "cls_attn"

    def score_set(self, t: int, active: torch.Tensor, n: int) -> torch.Tensor:
        """The patches whose scores the event at ``t`` reads (default: the active ones)."""
        return active

    def scored(self, t: int, k: int, n: int) -> int:
        """How many patches the score forward of the event at ``t`` sees when ``k`` are active."""
        return k

    def act(self, t: int, active: torch.Tensor, score: torch.Tensor | None, n: int, iterations: int) -> Event:
        raise NotImplementedError

    def finish(self, active: torch.Tensor) -> list:
        """Output index sets at the end of the run."""
        return [active]

    def active_counts(self, n: int, iterations: int) -> list[int]:
        """Active patch count at every iteration 0..T-1 (0 after the run stops)."""
        counts, k = [], n
        events = set(self.event_iterations(iterations, n))
        run = self.run_length(iterations)
        for t in range(iterations):
            if t in events:
                k = self._count_after(t, k, n, iterations)
            counts.append(k if t < run else 0)
        return counts

    def _count_after(self, t, k, n, iterations):
        return k

    def params(self) -> dict:
        return {"method": self.method}

    def validate(self, n: int, iterations: int, batch: int) -> None:
        if iterations < 1:
            raise PriError("--iterations", f"must be >= 1 (got {iterations})")
        if batch < 1:
            raise PriError("--batch", f"must be >= 1 (got {batch})")
        if self.score not in ("none",) + SCORES:
            raise PriError("--score", f"unknown score {self.score!r}: choose one of {', '.join(SCORES)}")


class DMI(Schedule):
    """Dense: all patches, one dense image per trajectory; ``run`` iterations if given (fewer than T:
    the DMI control at PRI's mean updates per patch), else all T."""
    method = "dmi"
    score = "none"

    def __init__(self, run: int | None = None):
        self.run = None if run is None else int(run)

    def run_length(self, iterations):
        return iterations if self.run is None else min(iterations, self.run)

    def needs_score(self, t):
        return False

    def validate(self, n, iterations, batch):
        super().validate(n, iterations, batch)
        if self.run is not None and self.run < 1:
            raise PriError("--iterations", f"the DMI control runs {self.run} iterations: give more --iterations")

    def params(self):
        return {"method": self.method} if self.run is None else {"method": self.method, "run_iterations": self.run}


class SMI(Schedule):
    """Sparse model inversion: prune the lowest-scoring patches at each prune iteration, either a
    fraction (``ratios``, floor) or down to given counts (``keep``); pruned patches never return."""
    method = "smi"

    def __init__(self, prune_at=SMI_PUBLIC_PRUNE_AT, ratios=None, keep=None, score: str = "cls_attn"):
        self.prune_at = [int(p) for p in prune_at]
        self.keep = None if keep is None else [int(k) for k in keep]
        if ratios is None and keep is None:
            ratios = [SMI_PUBLIC_RATIO] * len(self.prune_at)
        self.ratios = None if ratios is None else [float(r) for r in ratios]
        self.score = score

    def validate(self, n, iterations, batch):
        super().validate(n, iterations, batch)
        if not self.prune_at:
            raise PriError("--prune-at", "SMI needs at least one prune iteration (e.g. --prune-at 50 100 200 300)")
        if self.ratios is not None and self.keep is not None:
            raise PriError("--prune-keep", "give either --prune-ratio or --prune-keep, not both")
        per = self.ratios if self.ratios is not None else self.keep
        opt = "--prune-ratio" if self.ratios is not None else "--prune-keep"
        if len(per) != len(self.prune_at):
            raise PriError(opt, f"give one value per prune iteration: {len(self.prune_at)} prune iterations but "
                           f"{len(per)} values")
        if self.ratios is not None and not all(0.0 < r < 1.0 for r in self.ratios):
            raise PriError("--prune-ratio", f"ratios must lie in (0, 1) (got {self.ratios})")
        if self.keep is not None and not (all(1 <= k for k in self.keep) and self.keep[0] <= n
                                          and all(b <= a for a, b in zip(self.keep, self.keep[1:]))):
            raise PriError("--prune-keep", f"counts must be non-increasing between 1 and {n} (got {self.keep})")
        if any(b <= a for a, b in zip(self.prune_at, self.prune_at[1:])) or self.prune_at[0] < 1:
            raise PriError("--prune-at", f"prune iterations must be positive and increasing (got {self.prune_at})")
        if self.prune_at[-1] >= iterations:
            raise PriError("--prune-at", f"prune iteration {self.prune_at[-1]} is not below --iterations "
                           f"{iterations}: use iterations inside the run (the public 50 100 200 300 of 4000 are "
                           "scaled to any T when --prune-at is not given)")

    def event_iterations(self, iterations, n):
        return list(self.prune_at)

    def _count_after(self, t, k, n, iterations):
        i = self.prune_at.index(t)
        return self.keep[i] if self.keep is not None else keep_count(k, self.ratios[i])

    def act(self, t, active, score, n, iterations):
        return Event(new_active=top_patches(active, score, self._count_after(t, active.shape[1], n, iterations)))

    def params(self):
        p = {"method": self.method, "prune_at": list(self.prune_at), "score": self.score}
        if self.ratios is not None:
            p["prune_ratio"] = list(self.ratios)
        if self.keep is not None:
            p["prune_keep"] = list(self.keep)
        return p


class SMIRerank(SMI):
    """SMI with periodic re-ranking: SMI's prunes and counts, and every ``every`` iterations after
    the first prune the score is read over all N patches (un-augmented forward) and the active set
    re-chosen at the current count. A patch that comes back resumes from its frozen pixels."""
    method = "smi_rerank"

    def __init__(self, prune_at=SMI_PUBLIC_PRUNE_AT, ratios=None, keep=None, every: int = 50,
                 score: str = "cls_attn"):
        super().__init__(prune_at, ratios, keep, score)
        self.every = int(every)

    def validate(self, n, iterations, batch):
        super().validate(n, iterations, batch)
        if self.every < 1:
            raise PriError("--rerank-every", f"must be >= 1 (got {self.every})")

    def reranks(self, iterations: int) -> list[int]:
        first = self.prune_at[0]
        return [t for t in range(first + self.every, iterations, self.every) if t not in self.prune_at]

    def event_iterations(self, iterations, n):
        return sorted(set(self.prune_at) | set(self.reranks(iterations)))

    def _count_after(self, t, k, n, iterations):
        return super()._count_after(t, k, n, iterations) if t in self.prune_at else k

    def score_set(self, t, active, n):
        if t in self.prune_at:
            return active
        return torch.arange(n, device=active.device).unsqueeze(0).expand(active.shape[0], -1)

    def scored(self, t, k, n):
        return k if t in self.prune_at else n

    def act(self, t, active, score, n, iterations):
        if t in self.prune_at:
            return super().act(t, active, score, n, iterations)
        cand = self.score_set(t, active, n)
        return Event(new_active=top_patches(cand, score, active.shape[1]))

    def params(self):
        return {**super().params(), "rerank_every": self.every}


class PRI(Schedule):
    """Patch Rebirth Inversion: at t_k = k * floor(T / v) detach the top N // v active patches
    into one sparse image; the rest keep evolving; at t_v the remainder forms the last image."""
    method = "pri"

    def __init__(self, v: int, score: str = "cls_attn"):
        self.v = int(v)
        self.score = score

    def validate(self, n, iterations, batch):
        super().validate(n, iterations, batch)
        if not 1 <= self.v <= n:
            opt = getattr(self, "v_option", "--v")
            raise PriError(opt, f"division factor must lie in [1, {n}] (the model has {n} patches; got {self.v}"
                           f"{' in the tag' if opt != '--v' else ''})")
        if iterations < self.v:
            raise PriError("--iterations", f"must be >= v ({self.v}) so every detach point is a distinct "
                           f"iteration (got {iterations})")
        if batch < self.v:
            raise PriError("--batch", f"counts output images and must be >= v ({self.v}); got {batch}")

    def trajectories(self, batch):
        return batch // self.v

    def images_per_trajectory(self):
        return self.v

    def interval(self, iterations):
        return iterations // self.v

    def run_length(self, iterations):
        return self.v * self.interval(iterations)

    def event_iterations(self, iterations, n):
        # t_1 .. t_{v-1}; t_v is the end of the run (finish)
        return [k * self.interval(iterations) for k in range(1, self.v)]

    def _count_after(self, t, k, n, iterations):
        return k - n // self.v

    def act(self, t, active, score, n, iterations):
        per = n // self.v
        order = _rank(score)
        top = torch.sort(order[:, :per], dim=1).values
        rest = torch.sort(order[:, per:], dim=1).values
        return Event(new_active=active.gather(1, rest), emitted=[active.gather(1, top)])

    def mean_updates(self, n: int, iterations: int) -> float:
        """Optimisation steps a patch receives, averaged over the N patches of a trajectory."""
        step, per = self.interval(iterations), n // self.v
        sizes = [per] * (self.v - 1) + [n - (self.v - 1) * per]
        return sum(s * (k + 1) * step for k, s in enumerate(sizes)) / n

    def params(self):
        return {"method": self.method, "v": self.v, "score": self.score}


class IdealSMI(Schedule):
    """SMI*: the idealised SMI of the paper's Theorem 1, pruned at step 0 straight to ``keep``
    patches (by score) and optimised at that count for all T iterations. Runnable by the engine
    (the event at t = 0 reads scores on the initial noise)."""
    method = "smi_star"

    def __init__(self, keep: int, score: str = "cls_attn"):
        self.keep = int(keep)
        self.score = score

    def validate(self, n, iterations, batch):
        super().validate(n, iterations, batch)
        if not 1 <= self.keep <= n:
            raise PriError("--schedule", f"SMI* keeps between 1 and {n} patches (got {self.keep})")

    def event_iterations(self, iterations, n):
        return [0]

    def _count_after(self, t, k, n, iterations):
        return self.keep

    def act(self, t, active, score, n, iterations):
        return Event(new_active=top_patches(active, score, self.keep))

    def params(self):
        return {"method": self.method, "keep": self.keep, "score": self.score}


def final_count(schedule: Schedule, n: int, iterations: int) -> int:
    counts = [c for c in schedule.active_counts(n, iterations) if c > 0]
    return counts[-1] if counts else 0


# ------------------------------------------------------------------------------------ vocabulary
OPTIONS = {  # schedule options beyond the tag: the `pri invert` option and its help
    "rerank_every": "--rerank-every",
    "prune_at": "--prune-at",
    "prune_ratio": "--prune-ratio",
    "prune_keep": "--prune-keep",
    "score": "--score",
}


@dataclass(frozen=True)
class Method:
    """One entry of the vocabulary: a tag stem, its family label, whether it takes a division
    factor ``v``, the schedule it builds and the options beyond the tag that it accepts."""
    name: str
    family: str
    v: str  # "required" | "none" | "optional"
    build: Callable  # (v, n, iterations, options) -> Schedule
    options: tuple = ()
    sparsity: Callable | None = None  # (v) -> nominal fraction of patches removed per image
    help: str = ""
    random_variant: str | None = None  # the method `--method NAME --score random` means (pri -> pri_random)
    plain: str | None = None  # the method `--method NAME` means without v or options (smi -> smi_default)


REGISTRY: dict[str, Method] = {}


def register(m: Method) -> Method:
    """Add a method to the vocabulary; a name registered twice is an error, not a silent overwrite."""
    if m.name in REGISTRY:
        raise ValueError(f"method {m.name!r} is already registered ({REGISTRY[m.name].help or REGISTRY[m.name].family}); "
                         "choose another name")
    REGISTRY[m.name] = m
    return m


def _smi_custom(v, n, T, o):
    prune_at = o.get("prune_at") or scaled_prune_at(T)
    if o.get("prune_keep"):
        return SMI(prune_at, keep=o["prune_keep"], score=o.get("score", "cls_attn"))
    ratios = o.get("prune_ratio") or [SMI_PUBLIC_RATIO] * len(prune_at)
    return SMI(prune_at, ratios=ratios, score=o.get("score", "cls_attn"))


def _smi(v, n, T, o):
    if v is None:
        return _smi_custom(v, n, T, o)
    prune_at = scaled_prune_at(T)
    return SMI(prune_at, keep=matched_counts(n, v, len(prune_at)))


def _smi_rerank(v, n, T, o):
    base = _smi(v, n, T, o) if v is not None else _smi_custom(v, n, T, o)
    every = o.get("rerank_every")
    return SMIRerank(base.prune_at, base.ratios, base.keep, every=max(1, T // 10) if every is None else every)


def _dmi_updates(v, n, T, o):
    return DMI(run=int(round(PRI(v).mean_updates(n, T))))


def _smi_star(v, n, T, o):
    if v is None:
        return IdealSMI(final_count(SMI(scaled_prune_at(T)), n, T))
    return IdealSMI(matched_keep(n, v))


register(Method("dmi", "DMI", "none", lambda v, n, T, o: DMI(), sparsity=lambda v: 0.0,
                help="dense model inversion"))
register(Method("dmi_updates", "DMI (PRI's updates)", "required", _dmi_updates, sparsity=lambda v: 0.0,
                help="DMI run for PRI's mean optimisation steps per patch at v (about T(v+1)/(2v)): the control "
                     "that separates rebirth from fewer updates"))
register(Method("smi_default", "SMI (default)", "none",
                lambda v, n, T, o: SMI(scaled_prune_at(T), ratios=[SMI_PUBLIC_RATIO] * len(scaled_prune_at(T))),
                sparsity=lambda v: 1 - (1 - SMI_PUBLIC_RATIO) ** SMI_PRUNES,
                help="SMI's public schedule: prune 30% at 50/100/200/300 of 4000, scaled to T"))
register(Method("smi", "SMI (matched)", "optional", _smi, options=("prune_at", "prune_ratio", "prune_keep", "score"),
                sparsity=lambda v: 1 - 1 / v, plain="smi_default",
                help="SMI at PRI's sparsity 1 - 1/v (smi_v<V>); without v, SMI with explicit prune options"))
register(Method("smi_rerank", "SMI (re-ranking)", "required", _smi_rerank, options=("rerank_every",),
                sparsity=lambda v: 1 - 1 / v,
                help="SMI at matched sparsity that re-chooses its active set over all patches every "
                     "--rerank-every iterations after the first prune"))
register(Method("pri", "PRI", "required", lambda v, n, T, o: PRI(v), sparsity=lambda v: 1 - 1 / v,
                random_variant="pri_random", help="Patch Rebirth Inversion with division factor v"))
register(Method("pri_random", "PRI (random)", "required", lambda v, n, T, o: PRI(v, score="random"),
                sparsity=lambda v: 1 - 1 / v, help="PRI with random patch selection (the Re-Birth ablation)"))
register(Method("smi_star", "SMI*", "optional", _smi_star,
                help="the idealised SMI of Theorem 1, pruned at step 0 to PRI's count (smi_star_v<V>) or to SMI's "
                     "final count (smi_star)"))

_TAG = re.compile(r"^(?P<name>[a-z][a-z0-9_]*?)(?:_v(?P<v>[0-9]+))?$")


def tag_help() -> str:
    return ", ".join(f"{m.name}_v<V>" if m.v == "required" else
                     (f"{m.name}[_v<V>]" if m.v == "optional" else m.name) for m in REGISTRY.values())


@dataclass(frozen=True)
class Spec:
    """A method tag, parsed: the registry entry ``name`` and its division factor ``v``."""
    name: str
    v: int | None = None
    option: str = field(default="--v", compare=False, repr=False)  # where v was given: errors about it name this

    @classmethod
    def parse(cls, tag: str, option: str = "--schedule") -> "Spec":
        m = _TAG.match(str(tag).strip())
        name, v = (m["name"], int(m["v"]) if m["v"] else None) if m else (None, None)
        if name not in REGISTRY and m and m["v"]:  # e.g. a stem that itself ends in _v<digits>
            name, v = None, None
        if name not in REGISTRY:
            raise PriError(option, f"unknown method tag {tag!r}: use one of {tag_help()}")
        spec = cls(name, v, option)
        spec.check(option)
        return spec

    def check(self, option: str = "--schedule") -> None:
        need = self.method.v
        if need == "required" and self.v is None:
            raise PriError(option, f"{self.name} needs a division factor: write {self.name}_v<V>, e.g. {self.name}_v4")
        if need == "none" and self.v is not None:
            raise PriError(option, f"{self.name} takes no division factor: write {self.name}")
        if self.v is not None and self.v < 1:
            raise PriError(option, f"{self.tag}: the division factor must be >= 1")

    @property
    def method(self) -> Method:
        return REGISTRY[self.name]

    @property
    def tag(self) -> str:
        return self.name if self.v is None else f"{self.name}_v{self.v}"

    @property
    def family(self) -> str:
        return self.method.family

    @property
    def nominal_sparsity(self) -> float | None:
        f = self.method.sparsity
        return None if f is None or (self.v is None and self.method.v != "none") else float(f(self.v))

    def build(self, n: int, iterations: int, options: dict | None = None) -> Schedule:
        """The schedule of this tag for a model with ``n`` patches and ``iterations`` T; ``options``
        beyond the tag (``--rerank-every``, SMI's explicit prune options) must be ones it takes."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        allowed = set(self.method.options)
        if self.name == "smi" and self.v is not None:
            allowed = set()
        bad = sorted(set(options) - allowed)
        if bad:
            takes = ", ".join(OPTIONS[o] for o in sorted(allowed)) or "none"
            raise PriError(OPTIONS.get(bad[0], bad[0]), f"{self.tag} does not take {OPTIONS.get(bad[0], bad[0])} "
                           f"(its options: {takes})")
        schedule = self.method.build(self.v, n, iterations, options)
        schedule.v_option = self.option
        return schedule

    def describe(self) -> dict:
        return {"tag": self.tag, "method": self.name, "family": self.family, "v": self.v,
                "nominal_sparsity": self.nominal_sparsity}


def build(tag: str, n: int, iterations: int, options: dict | None = None, option: str = "--schedule") -> Schedule:
    """Shorthand: the schedule of ``tag``."""
    return Spec.parse(tag, option).build(n, iterations, options)


def theorem1_companions(tags) -> list[str]:
    """The SMI* tags that Theorem 1 compares with the PRI tags among ``tags``."""
    out = []
    for t in tags:
        s = Spec.parse(t)
        if s.name == "pri" and Spec("smi_star", s.v).tag not in out:
            out.append(Spec("smi_star", s.v).tag)
    return out


def standard_tags(vs=(2, 4, 7), random: bool = True, matched: bool = True, ideal: bool = True) -> list[str]:
    """Every tag the suite compares at division factors ``vs``: DMI, SMI's default, and per v SMI at
    matched sparsity, SMI*, PRI and PRI with random selection (plus SMI* at SMI's final count)."""
    tags = ["dmi", "smi_default"] + (["smi_star"] if ideal else [])
    for v in vs:
        tags += [Spec("smi", v).tag] if matched else []
        tags += [Spec("smi_star", v).tag] if ideal else []
        tags += [Spec("pri", v).tag] + ([Spec("pri_random", v).tag] if random else [])
    return tags
