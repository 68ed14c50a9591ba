"""One inversion engine for every method.

Loss CE + TV, Adam on the pixels, roll-and-flip augmentation with the active set remapped,
clamping to the valid pixel range, the importance score read on an un-augmented forward.
DMI, SMI and PRI differ only in the schedule (pri/core/schedules.py).

Between two schedule events every tensor has a fixed shape, so the whole optimisation step
(augment, sparse forward, loss, backward, Adam, clamp) works on static buffers. On a GPU each
stage's step is captured once as a CUDA graph and replayed, which removes the per-step launch
overhead that would otherwise hide the token savings; on a CPU the same step body runs eagerly.
"""
from __future__ import annotations

import math
import resource
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from pri.core.runtime import derive_seed, progress, resolve_device, sync
from pri.core.schedules import Schedule
from pri.core.vit import grid_size, num_patches, patch_size, sparse_forward
from pri.errors import PriError


@dataclass
class Teacher:
    """A classifier with the normalisation its inputs need and where it came from: what the engine inverts."""
    model: torch.nn.Module
    name: str
    mean: tuple
    std: tuple
    provenance: dict = field(default_factory=dict)
    test_confidence: torch.Tensor | None = None  # max-softmax on the real test set, recorded by pri teacher

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)


@dataclass
class InversionConfig:
    iterations: int
    batch: int  # output images (PRI: trajectories = batch // v)
    seed: int = 0
    lr: float = 0.25
    beta1: float = 0.5
    beta2: float = 0.99
    ce_weight: float = 1.0
    tv_weight: float = 1e-4
    jitter: float = 0.125  # max roll, fraction of the image side (rounded to whole patches)
    flip: bool = True
    score_layer: int = -1
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    tf32: bool = True  # GPU matmuls in TF32 (fp32 mode)
    graphs: str = "auto"  # auto (CUDA graphs on GPU) | off
    graph_warmup: int = 2  # eager steps per stage before capture
    progress: bool = True
    label_seed: int | None = None  # seed of the class order (default: seed); the same for every method
    part: int = 0  # this job's index among the `parts` jobs of one seed (labels continue across them)
    parts: int = 1
    classes: tuple | None = None  # restrict the labels to these classes (one-class inversion)


def assign_labels(trajectories: int, num_classes: int, label_seed: int, part: int = 0, parts: int = 1,
                  classes=None) -> torch.Tensor:
    """One target class per trajectory, balanced over the ``parts * trajectories`` trajectories of
    all the jobs of a seed: the classes, in an order drawn from ``label_seed``, take contiguous runs
    of trajectories whose lengths differ by at most one. Image j of any method gets the class of
    run ``floor(j * C / M)`` of its seed's M images whenever M is a multiple of C * v for every
    method's v, so the methods of a seed see the same labels per output image."""
    cls = torch.arange(num_classes) if classes is None else torch.as_tensor(list(classes), dtype=torch.long)
    perm = cls[torch.randperm(len(cls), generator=torch.Generator().manual_seed(derive_seed(label_seed, "labels")))]
    g = part * trajectories + torch.arange(trajectories)
    return perm[(g * len(cls)) // max(1, parts * trajectories)]


class Augment:
    """Random roll by whole patches (up to ``jitter`` of the side) and horizontal flip.

    Each of the finitely many augmentations is a pixel permutation (a gather, so the step
    keeps static shapes and can be captured) plus a patch permutation that remaps the active
    set: patch ``j`` of the original image lands at ``patch_dst[j]`` of the augmented one.
    """

    def __init__(self, h: int, w: int, p: int, jitter: float, flip: bool, device, shift: int | None = None):
        gh, gw = h // p, w // p
        my = int(math.floor(h * jitter / p + 0.5)) if jitter > 0 else 0
        mx = int(math.floor(w * jitter / p + 0.5)) if jitter > 0 else 0
        if shift is not None:  # the largest roll given in whole patches instead
            my = mx = int(shift)
        self.max_shift = (my, mx)
        self.flip = bool(flip)
        combos = [(dy, dx, f) for dy in range(-my, my + 1) for dx in range(-mx, mx + 1)
                  for f in ((0, 1) if flip else (0,))]
        ii = torch.arange(h).view(h, 1).expand(h, w)
        jj = torch.arange(w).view(1, w).expand(h, w)
        r = torch.arange(gh).view(gh, 1).expand(gh, gw)
        c = torch.arange(gw).view(1, gw).expand(gh, gw)
        pix, dst = [], []
        for dy, dx, f in combos:
            src_j = (w - 1 - jj) if f else jj
            pix.append((((ii - dy * p) % h) * w + (src_j - dx * p) % w).reshape(-1))
            rr, cc = (r + dy) % gh, (c + dx) % gw
            if f:
                cc = gw - 1 - cc
            dst.append((rr * gw + cc).reshape(-1))
        self.combos = combos
        self.pixel_src = torch.stack(pix).to(device)  # [A, H*W]: augmented pixel <- original pixel
        self.patch_dst = torch.stack(dst).to(device)  # [A, N]: original patch -> augmented patch

    def __len__(self):
        return len(self.combos)

    @staticmethod
    def apply(x: torch.Tensor, pixel_src: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # gather with an expanded index: same result as index_select, several times faster on CPU
        idx = pixel_src.view(1, 1, -1).expand(B, C, -1)
        return torch.gather(x.reshape(B, C, H * W), 2, idx).view(B, C, H, W)

    def draw(self, b: int, gen: torch.Generator) -> torch.Tensor:
        """One augmentation per image: roll (dy, dx) uniform in whole patches, then flip with p = 0.5
        (drawn in that order from ``gen``); returns their indices into ``combos``."""
        my, mx = self.max_shift
        dy = torch.randint(-my, my + 1, (b,), generator=gen)
        dx = torch.randint(-mx, mx + 1, (b,), generator=gen)
        f = (torch.rand(b, generator=gen) < 0.5).long() if self.flip else torch.zeros(b, dtype=torch.long)
        nf = 2 if self.flip else 1
        return ((dy + my) * (2 * mx + 1) + (dx + mx)) * nf + f  # the order in which combos are listed

    def apply_each(self, x: torch.Tensor, combo: torch.Tensor) -> torch.Tensor:
        """Image ``i`` of ``x`` under augmentation ``combo[i]``."""
        B, C, H, W = x.shape
        idx = self.pixel_src[combo.to(self.pixel_src.device)].unsqueeze(1).expand(B, C, -1)
        return torch.gather(x.reshape(B, C, H * W), 2, idx.to(x.device)).view(B, C, H, W)

    def move_masks(self, mask: torch.Tensor, combo: torch.Tensor) -> torch.Tensor:
        """Patch masks [B, N] following their images under ``combo``."""
        dst = self.patch_dst[combo.to(self.patch_dst.device)].to(mask.device)
        return torch.zeros_like(mask).scatter_(1, dst, mask)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean over images of the l2 norms of vertical and horizontal neighbour differences."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).flatten(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).flatten(1)
    return (dh.norm(dim=1) + dw.norm(dim=1)).mean()


def to_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, patch_mask: torch.Tensor, p: int):
    """Normalised pixels -> uint8 in [0, 255]; pixels of patches outside the mask exactly 0."""
    B, C, H, W = x.shape
    img = ((x.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    gh, gw = H // p, W // p
    pm = patch_mask.view(B, 1, gh, 1, gw, 1).expand(B, 1, gh, p, gw, p).reshape(B, 1, H, W)
    return img * pm.to(torch.uint8)


class Stage:
    """The optimisation step at one fixed active count, on static buffers."""

    def __init__(self, inv: "Inverter", active: torch.Tensor):
        self.inv = inv
        self.active = active  # [B, K] in original patch coordinates
        self.active_aug = active.clone()  # remapped per step
        self.pixel_src = inv.aug.pixel_src[0].clone()
        self.graph = None
        self.steps = 0
        # the clamp to the valid pixel range after each Adam step; pixels of patches outside the
        # active set get lo = hi = their value when they left it, so the same clamp keeps them frozen
        self.lo, self.hi = inv.lo, inv.hi
        if active.shape[1] < inv.n:
            mask = torch.zeros(active.shape[0], inv.n, dtype=torch.bool, device=active.device)
            mask.scatter_(1, active, True)
            p, gh, gw = inv.p, inv.gh, inv.gw
            keep = mask.view(-1, 1, gh, 1, gw, 1).expand(-1, 1, gh, p, gw, p).reshape(-1, 1, gh * p, gw * p)
            frozen = inv.x.detach()
            self.lo = torch.where(keep, inv.lo, frozen)
            self.hi = torch.where(keep, inv.hi, frozen)

    def _body(self):
        inv = self.inv
        x_aug = Augment.apply(inv.x, self.pixel_src)
        with inv.autocast():
            logits = sparse_forward(inv.model, x_aug, self.active_aug)
        loss = inv.cfg.ce_weight * F.cross_entropy(logits.float(), inv.labels)
        if inv.cfg.tv_weight:
            loss = loss + inv.cfg.tv_weight * total_variation(inv.x)
        loss.backward()
        inv.opt.step()
        with torch.no_grad():
            inv.x.clamp_(self.lo, self.hi)
        return loss

    def step(self, combo: int):
        inv = self.inv
        # set this step's augmentation into the static buffers (device-side copies, no host sync)
        self.pixel_src.copy_(inv.aug.pixel_src[combo])
        torch.gather(inv.aug.patch_dst[combo].expand(self.active.shape[0], -1), 1, self.active,
                     out=self.active_aug)
        if self.graph is not None:
            self.graph.replay()
        elif inv.use_graphs and self.steps >= inv.cfg.graph_warmup:
            self._capture()
            self.graph.replay()
        elif inv.use_graphs:
            # eager warm-up steps run on a side stream, as graph capture requires
            side = torch.cuda.Stream(inv.device)
            side.wait_stream(torch.cuda.current_stream(inv.device))
            with torch.cuda.stream(side):
                inv.opt.zero_grad(set_to_none=False)
                self._body()
            torch.cuda.current_stream(inv.device).wait_stream(side)
        else:
            inv.opt.zero_grad(set_to_none=False)
            self._body()
        self.steps += 1

    def _capture(self):
        """Record this stage's whole step (augment, forward, loss, backward, Adam, clamp) once."""
        inv = self.inv
        torch.cuda.synchronize(inv.device)
        inv.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._body()


def check_memory(batch: int, trajectories: int, shape: tuple, device: torch.device) -> None:
    """Refuse, before allocating, a batch whose pixels and Adam state alone (four float32 copies of
    the trajectories, plus the uint8 output images) exceed the memory of the device."""
    c, h, w = shape
    need = trajectories * c * h * w * 4 * 4 + batch * c * h * w
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        import os

        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise PriError("--batch", f"{batch} images of {c}x{h}x{w} need at least {need / 2**30:.3g} GiB for the pixels "
                       f"and their optimiser state alone, more than the {have / 2**30:.3g} GiB of {device.type}: lower "
                       "--batch (or split the images over jobs with --part/--parts)")


class Inverter:
    def __init__(self, teacher: Teacher, schedule: Schedule, cfg: InversionConfig):
        self.teacher, self.schedule, self.cfg = teacher, schedule, cfg
        self.model = teacher.model
        self.device = resolve_device(cfg.device)
        if cfg.dtype not in ("fp32", "bf16"):
            raise PriError("--dtype", f"unknown dtype {cfg.dtype!r}: choose fp32 or bf16")
        self.n = num_patches(self.model)
        self.p = patch_size(self.model)
        self.gh, self.gw = grid_size(self.model)
        schedule.validate(self.n, cfg.iterations, cfg.batch)
        self.model.to(self.device).eval().requires_grad_(False)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        self.use_graphs = self.device.type == "cuda" and cfg.graphs == "auto"
        pe = self.model.patch_embed
        self.c = int(pe.proj.in_channels)
        self.h, self.w = int(pe.img_size[0]), int(pe.img_size[1])
        self.mean = torch.tensor(teacher.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(teacher.std, device=self.device).view(1, -1, 1, 1)
        self.lo, self.hi = (0 - self.mean) / self.std, (1 - self.mean) / self.std
        self.aug = Augment(self.h, self.w, self.p, cfg.jitter, cfg.flip, self.device)
        self.trajectories = schedule.trajectories(cfg.batch)
        # independent streams per role, derived from the seed (seeds s and s + 1 share none)
        self.g_init = torch.Generator().manual_seed(derive_seed(cfg.seed, "init"))
        self.g_aug = torch.Generator().manual_seed(derive_seed(cfg.seed, "augment"))
        self.g_score = torch.Generator().manual_seed(derive_seed(cfg.seed, "score"))
        b = self.trajectories
        check_memory(cfg.batch, b, (self.c, self.h, self.w), self.device)
        self.labels = assign_labels(b, teacher.num_classes, cfg.seed if cfg.label_seed is None else cfg.label_seed,
                                    cfg.part, cfg.parts, cfg.classes).to(self.device)
        x0 = torch.randn(b, self.c, self.h, self.w, generator=self.g_init)
        self.x = x0.to(self.device).requires_grad_(True)
        with torch.no_grad():
            self.x.clamp_(self.lo, self.hi)
        # capturable on every GPU run, graphs or not, so that both paths do the same Adam arithmetic
        self.opt = torch.optim.Adam([self.x], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                    capturable=self.device.type == "cuda")

    def autocast(self):
        if self.cfg.dtype == "bf16":
            # the weight-cast cache must be off when a step is captured as a CUDA graph
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.use_graphs)
        return torch.autocast(self.device.type, enabled=False)

    def sample_combo(self) -> int:
        return int(torch.randint(len(self.aug), (1,), generator=self.g_aug))

    def score(self, active: torch.Tensor, t: int) -> torch.Tensor | None:
        """Patch scores on an un-augmented forward (or random, for the Re-Birth ablation)."""
        if self.schedule.needs_score(t):
            with torch.no_grad(), self.autocast():
                _, s = sparse_forward(self.model, self.x, active, with_score=True, score_layer=self.cfg.score_layer)
            return s.float()
        return torch.rand(active.shape, generator=self.g_score).to(self.device)

    def stage_stepper(self, k: int):
        """A zero-argument function running one full step at ``k`` active patches (for timing)."""
        b = self.trajectories
        active = torch.stack([torch.randperm(self.n, generator=self.g_score)[:k].sort().values for _ in range(b)])
        stage = Stage(self, active.to(self.device))
        return lambda: stage.step(self.sample_combo())

    def run(self, callback=None) -> dict:
        """Run the schedule; returns the pool dict. ``callback(t, x, emitted)`` is called at each
        event with the trajectory pixels (normalised) before it acts (for tests and inspection)."""
        cfg, sched, T = self.cfg, self.schedule, self.cfg.iterations
        run_len = sched.run_length(T)
        events = set(sched.event_iterations(T, self.n))
        b = self.trajectories
        active = torch.arange(self.n, device=self.device).unsqueeze(0).expand(b, -1).contiguous()
        out_imgs, out_masks, out_stage, out_updates, counts = [], [], [], [], []
        stage_no = 0
        # optimisation steps each patch of each trajectory received so far (original patch order)
        updates = torch.zeros(b, self.n, dtype=torch.int32, device=self.device)
        last = 0

        def advance(t):
            nonlocal last
            updates.scatter_add_(1, active, torch.full(active.shape, t - last, dtype=torch.int32, device=self.device))
            last = t

        def emit(idx):
            nonlocal stage_no
            mask = torch.zeros(b, self.n, dtype=torch.bool, device=self.device).scatter_(1, idx, True)
            with torch.no_grad():
                out_imgs.append(to_uint8(self.x.detach(), self.mean, self.std, mask, self.p).cpu())
            out_masks.append(mask.cpu())
            out_updates.append(torch.zeros_like(updates).scatter_(1, idx, updates.gather(1, idx)).cpu())
            out_stage.append(torch.full((b,), stage_no, dtype=torch.int64))
            stage_no += 1

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        stage = Stage(self, active)
        bar = progress(run_len, cfg.progress, f"{sched.method} invert", unit="it")
        sync(self.device)
        t0 = time.perf_counter()
        for t in range(run_len):
            if t in events:
                advance(t)
                score = self.score(sched.score_set(t, active, self.n), t)
                ev = sched.act(t, active, score, self.n, T)
                if callback is not None:
                    callback(t, self.x.detach(), ev.emitted)
                for idx in ev.emitted:
                    emit(idx)
                active = ev.new_active
                stage = Stage(self, active)
                bar.set_postfix_str(f"active={active.shape[1]}/{self.n}", refresh=False)
            counts.append(active.shape[1])
            stage.step(self.sample_combo())
            bar.update(1)
        advance(run_len)
        final = sched.finish(active)
        if callback is not None:
            callback(run_len, self.x.detach(), final)
        for idx in final:
            emit(idx)
        sync(self.device)
        wall = time.perf_counter() - t0
        bar.close()
        return self._pool(out_imgs, out_masks, out_stage, out_updates, counts + [0] * (T - len(counts)), wall)

    def _pool(self, out_imgs, out_masks, out_stage, out_updates, counts, wall) -> dict:
        """The pool dict of a finished run: images ordered by trajectory, then stage."""
        b, stages_n = self.trajectories, len(out_imgs)
        imgs, masks, stages = torch.cat(out_imgs), torch.cat(out_masks), torch.cat(out_stage)
        traj = torch.arange(b).repeat(stages_n)
        order = torch.argsort(traj * (stages_n + 1) + stages)
        ledger = self._ledger(counts, imgs.shape[0], wall)
        return {
            "images": imgs[order].contiguous(),
            "masks": masks[order].contiguous(),
            "labels": self.labels.cpu().repeat(stages_n)[order].contiguous(),
            "trajectory": traj[order].contiguous(),
            "stage": stages[order].contiguous(),
            "updates": torch.cat(out_updates)[order].contiguous(),
            "ledger": ledger,
        }

    def _ledger(self, counts, images_out, wall) -> dict:
        """The pool's ledger. Its TIMING_KEYS (wall-clock, peak memory) differ between two runs of
        the same work: pri.files.io.atomic_torch_save writes them to the pool's timing side file."""
        from pri.core.runtime import device_name, versions, weights_sha256

        cfg = self.cfg
        if self.device.type == "cuda":
            peak = {"peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
                    "peak_memory_kind": "cuda_max_allocated"}
        else:
            peak = {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "peak_memory_kind": "process_max_rss"}
        return {
            **self.schedule.params(),
            "iterations": cfg.iterations,
            "iterations_run": self.schedule.run_length(cfg.iterations),
            "active_tokens": list(counts),
            "num_patches": self.n,
            "batch": cfg.batch,
            "trajectories": self.trajectories,
            "images_out": images_out,
            "wall_seconds": wall,
            "seconds_per_image": wall / max(1, images_out),
            **peak,
            "device": device_name(self.device),
            "dtype": cfg.dtype,
            "tf32": bool(cfg.tf32 and self.device.type == "cuda"),
            "cuda_graphs": self.use_graphs,
            "seed": cfg.seed,
            "config": asdict(cfg),
            "augmentations": len(self.aug),
            "teacher": {**self.teacher.provenance, "weights_sha256": weights_sha256(self.model)},
            **versions(),
        }


def invert(teacher: Teacher, schedule: Schedule, cfg: InversionConfig, callback=None) -> dict:
    return Inverter(teacher, schedule, cfg).run(callback)
