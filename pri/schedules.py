"""Schedules: the only thing in which DMI, SMI and PRI differ.

The engine runs one loop. Before iteration ``t`` (that is, after ``t`` optimisation steps) a
schedule may act: read patch scores on an un-augmented forward, shrink the active set, and
emit output images (a set of patch indices per trajectory whose current pixels become one
sparse synthetic image). A new method is a new schedule, not a new loop.

Counts per iteration are also available analytically (``active_counts``) for the cost model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import PriError

SMI_PUBLIC_PRUNE_AT = (50, 100, 200, 300)
SMI_PUBLIC_RATIO = 0.3
SMI_PUBLIC_T = 4000
SCORES = ("cls_attn", "random")


def keep_count(k: int, ratio: float) -> int:
    """Patches kept when the lowest-scoring fraction ``ratio`` of ``k`` is pruned (floor, >= 1)."""
    return max(1, int(math.floor(k * (1.0 - ratio) + 1e-9)))


def matched_ratio(v: int, prunes: int = 4) -> float:
    """Per-prune ratio r with (1-r)^prunes = 1/v: SMI at PRI's sparsity 1 - 1/v."""
    return 1.0 - (1.0 / v) ** (1.0 / prunes)


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
        if self.score != "none" and self.score not in SCORES:
            raise PriError("--score", f"unknown score {self.score!r}: choose one of {', '.join(SCORES)}")


def _rank(score: torch.Tensor) -> torch.Tensor:
    """Positions sorted by descending score (stable: ties keep the lower position first)."""
    return torch.sort(score, dim=1, descending=True, stable=True).indices


class DMI(Schedule):
    """Dense: all patches for all iterations, one dense image per trajectory."""
    method = "dmi"
    score = "none"

    def needs_score(self, t):
        return False


class SMI(Schedule):
    """Sparse model inversion: prune the lowest-scoring fraction at each prune iteration."""
    method = "smi"

    def __init__(self, prune_at=SMI_PUBLIC_PRUNE_AT, ratios=None, score: str = "cls_attn"):
        self.prune_at = [int(p) for p in prune_at]
        if ratios is None:
            ratios = [SMI_PUBLIC_RATIO] * len(self.prune_at)
        self.ratios = [float(r) for r in ratios]
        self.score = score

    def validate(self, n, iterations, batch):
        super().validate(n, iterations, batch)
        if not self.prune_at:
            raise PriError("--prune-at", "SMI needs at least one prune iteration (e.g. --prune-at 50 100 200 300)")
        if len(self.ratios) != len(self.prune_at):
            raise PriError("--prune-ratio", f"give one ratio per prune iteration: {len(self.prune_at)} prune "
                           f"iterations but {len(self.ratios)} ratios")
        for r in self.ratios:
            if not 0.0 < r < 1.0:
                raise PriError("--prune-ratio", f"ratios must lie in (0, 1) (got {r})")
        if any(b <= a for a, b in zip(self.prune_at, self.prune_at[1:])) or self.prune_at[0] < 1:
            raise PriError("--prune-at", f"prune iterations must be positive and increasing (got {self.prune_at})")
        if self.prune_at[-1] >= iterations:
            raise PriError("--prune-at", f"prune iteration {self.prune_at[-1]} is not below --iterations "
                           f"{iterations}: use iterations inside the run (pri.schedules.scaled_prune_at scales "
                           "the public 50/100/200/300 to any T)")

    def event_iterations(self, iterations, n):
        return list(self.prune_at)

    def _count_after(self, t, k, n, iterations):
        return keep_count(k, self.ratios[self.prune_at.index(t)])

    def act(self, t, active, score, n, iterations):
        keep = keep_count(active.shape[1], self.ratios[self.prune_at.index(t)])
        pos = torch.sort(_rank(score)[:, :keep], dim=1).values
        return Event(new_active=active.gather(1, pos))

    def params(self):
        return {"method": self.method, "prune_at": list(self.prune_at), "prune_ratio": list(self.ratios),
                "score": self.score}


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
            raise PriError("--v", f"division factor must lie in [1, {n}] (the model has {n} patches; got {self.v})")
        if iterations < self.v:
            raise PriError("--iterations", f"must be >= --v ({self.v}) so every detach point is a distinct "
                           f"iteration (got {iterations})")
        if batch < self.v:
            raise PriError("--batch", f"counts output images and must be >= --v ({self.v}); got {batch}")

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

    def needs_score(self, t):
        return self.score == "cls_attn"

    def _count_after(self, t, k, n, iterations):
        return k - n // self.v

    def act(self, t, active, score, n, iterations):
        per = n // self.v
        order = _rank(score)
        top = torch.sort(order[:, :per], dim=1).values
        rest = torch.sort(order[:, per:], dim=1).values
        return Event(new_active=active.gather(1, rest), emitted=[active.gather(1, top)])

    def params(self):
        return {"method": self.method, "v": self.v, "score": self.score}


def make_schedule(method: str, v: int | None = None, prune_at=None, prune_ratio=None, score: str = "cls_attn"):
    method = method.lower()
    if method == "dmi":
        return DMI()
    if method == "smi":
        prune_at = list(prune_at) if prune_at else list(SMI_PUBLIC_PRUNE_AT)
        if prune_ratio is None or len(prune_ratio) == 0:
            prune_ratio = [SMI_PUBLIC_RATIO] * len(prune_at)
        return SMI(prune_at, prune_ratio, score=score)
    if method == "pri":
        if v is None:
            raise PriError("--v", "PRI needs a division factor, e.g. --v 4")
        return PRI(v, score=score)
    raise PriError("--method", f"unknown method {method!r}: choose dmi, smi or pri")
