"""One prepared GPU check (H200, ~6-8 minutes): paper-scale timings and CUDA-graph correctness.

    bash benchmarks/gpu_check.sh            # writes everything under $OUT (default ./gpu_check_out)
    python benchmarks/gpu_check.py --out DIR [--budget 420] [--quick]

Sections, in order of value; each writes its JSON as soon as it is done, and a section is skipped
(and says so in summary.json) when the time budget would be exceeded:

1. ``env.json``: torch/timm versions, GPU name.
2. ``correctness.json``: a captured stage against the eager one and each against itself (DeiT-Ti,
   batch 16, 49 patches, fp32 and bf16, 8 steps; same seed, active set and augmentations): the
   pixels, and the gradients (Adam's moments at lr 0); a short full PRI run (T = 40, v = 4) with
   graphs on and off. ``correctness_deterministic.json``: the same with deterministic algorithms.
3. ``paper_<model>.json``: DeiT-Ti and DeiT-B at batch 128, bf16, T = 4000: DMI, SMI (default),
   PRI v = 4 and v = 7, stage-sampled with CUDA graphs (``pri.measure.efficiency.efficiency_table``:
   analytic MACs and seconds per generated image, per-stage step times, peak memory);
   ``paper_fp32_<model>.json`` the same in fp32 with TF32 matmuls, config/paper.yaml's dtype.
   ``train_steps.json``: seconds per fine-tuning, KD and evaluation step of DeiT-Ti/S/B at 224 px
   (what ``benchmarks/gpu_hours.py --measured`` turns into the README's GPU-hours table).
4. ``overhead_<model>.json``: graphs off vs on for one dense stage (batch 128, 196 patches) and one
   sparse stage (18 trajectories, 28 patches, PRI v = 7's last) per model: the per-step launch
   overhead the graphs remove.
5. ``full_vs_sampled.json``: DeiT-Ti, T = 400, batch 128, bf16: the real loop (full mode, which
   includes each stage's warm-up and capture) against stage-sampled, for DMI and PRI v = 7.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

T0 = time.perf_counter()
# --dry-run (CPU, tiny model and sizes) checks the plumbing of this script where no GPU is
DEV = "cuda"
TINY, SMALL, BASE = "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"
PAPER = {"iterations": 4000, "batch": 128, "dtype": "bf16", "n": 196, "small_b": 18, "small_k": 28, "short_t": 400,
         "check_batch": 16, "check_k": 49}


def elapsed() -> float:
    return time.perf_counter() - T0


def dump(out: str, name: str, obj) -> None:
    path = os.path.join(out, name)
    with open(path + ".part", "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(path + ".part", path)


def env_info() -> dict:
    import platform

    import timm

    d = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
         "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        d.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                 capability=list(torch.cuda.get_device_capability(0)))
    return d


def _stage(teacher, dtype: str, graphs: str, steps: int, lr: float | None = None) -> dict:
    """``steps`` steps of one stage (49 patches) from the same start and augmentations."""
    from pri.core.engine import InversionConfig, Inverter
    from pri.core.schedules import DMI

    kw = {} if lr is None else {"lr": lr}
    cfg = InversionConfig(iterations=10, batch=PAPER["check_batch"], seed=3, device=DEV, dtype=dtype, graphs=graphs,
                          progress=False, **kw)
    inv = Inverter(teacher, DMI(), cfg)
    st = inv.stage_stepper(PAPER["check_k"])
    for _ in range(steps):
        st()
    torch.cuda.synchronize(inv.device)
    state = inv.opt.state[inv.x]
    return {"x": inv.x.detach().float().clone(), "m": state["exp_avg"].float().clone(),
            "v": state["exp_avg_sq"].float().clone(), "captured": inv.use_graphs}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def correctness(steps: int = 8, deterministic: bool = False) -> dict:
    """Captured vs eager, and each against itself (run-to-run), DeiT-Ti, batch 16, 49 patches.

    - ``x``: pixels after ``steps`` Adam steps (lr 0.25): tiny float differences in a gradient
      near zero become whole Adam steps, so this measures reproducibility more than correctness;
    - ``grad``: Adam's first/second moments after ``steps`` steps at lr 0 (the image stays put,
      each step sees another augmentation): the captured forward/backward against the eager one,
      relative l2 difference;
    - ``run``: a short full PRI run (T = 40, v = 4), graphs on vs off: masks and uint8 images.
    With ``deterministic`` the same under torch.use_deterministic_algorithms(True).
    """
    from pri.core.engine import InversionConfig, Inverter
    from pri.core.schedules import PRI
    from pri.files.models import load_model

    if deterministic:
        torch.use_deterministic_algorithms(True)
    teacher = load_model(TINY)
    res = {"deterministic": deterministic, "stage": [], "grad": [], "run": []}
    for dtype in ("fp32", "bf16"):
        e1, e2 = _stage(teacher, dtype, "off", steps), _stage(teacher, dtype, "off", steps)
        g1, g2 = _stage(teacher, dtype, "auto", steps), _stage(teacher, dtype, "auto", steps)
        res["stage"].append({"dtype": dtype, "steps": steps, "captured": g1["captured"],
                             "eager_vs_eager_max": float((e1["x"] - e2["x"]).abs().max()),
                             "graph_vs_graph_max": float((g1["x"] - g2["x"]).abs().max()),
                             "graph_vs_eager_max": float((g1["x"] - e1["x"]).abs().max()),
                             "graph_vs_eager_bitwise": bool(torch.equal(g1["x"], e1["x"]))})
        e1, e2 = _stage(teacher, dtype, "off", steps, lr=0.0), _stage(teacher, dtype, "off", steps, lr=0.0)
        g1 = _stage(teacher, dtype, "auto", steps, lr=0.0)
        res["grad"].append({"dtype": dtype, "steps": steps,
                            "m_rel_graph_vs_eager": _rel(g1["m"], e1["m"]),
                            "v_rel_graph_vs_eager": _rel(g1["v"], e1["v"]),
                            "m_rel_eager_vs_eager": _rel(e2["m"], e1["m"]),
                            "x_unchanged": bool(torch.equal(g1["x"], e1["x"]))})
    for dtype in ("fp32", "bf16"):
        pools = {}
        for graphs in ("auto", "off"):
            cfg = InversionConfig(iterations=40, batch=PAPER["check_batch"], seed=5, device=DEV, dtype=dtype,
                                  graphs=graphs, progress=False)
            pools[graphs] = Inverter(teacher, PRI(4), cfg).run()
        pa, pb = pools["auto"], pools["off"]
        img_diff = (pa["images"].int() - pb["images"].int()).abs()
        res["run"].append({"dtype": dtype, "schedule": "pri_v4", "iterations": 40, "batch": PAPER["check_batch"],
                           "masks_equal": bool(torch.equal(pa["masks"], pb["masks"])),
                           "images_max_abs_diff_uint8": int(img_diff.max()),
                           "images_frac_differing": float((img_diff > 0).float().mean())})
    if deterministic:
        torch.use_deterministic_algorithms(False)
    return res


def correctness_deterministic() -> dict:
    """``correctness`` in a child process started with CUBLAS_WORKSPACE_CONFIG (needed before
    cuBLAS starts) and deterministic algorithms on."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8")
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--only", "correctness", "--deterministic",
                            "--out", d] + (["--dry-run"] if DEV == "cpu" else []),
                           env=env, capture_output=True, text=True, timeout=300)
        path = os.path.join(d, "correctness.json")
        if not os.path.exists(path):
            raise RuntimeError(f"child failed (rc {r.returncode}): {r.stdout[-1500:]} {r.stderr[-1500:]}")
        with open(path) as f:
            return json.load(f)


def paper(model: str, steps: int, warmup: int, repeats: int, dtype: str | None = None) -> dict:
    from pri.measure.cost import standard_schedules
    from pri.measure.efficiency import efficiency_table

    T = PAPER["iterations"]
    scheds = standard_schedules(PAPER["n"], T, vs=(4, 7), random=False, matched=False, ideal=False)
    scheds = {k: scheds[k] for k in ("dmi", "smi_default", "pri_v4", "pri_v7")}
    details: dict = {}
    t = time.perf_counter()
    rows = efficiency_table(model, scheds, iterations=T, batch=PAPER["batch"], what=("cost", "time"),
                            mode="stage-sampled", steps=steps, warmup=warmup, repeats=repeats, device=DEV,
                            dtype=dtype or PAPER["dtype"], progress=False, details=details)
    stages = {tag: [{k: st[k] for k in ("active", "trajectories", "step_seconds", "step_samples", "peak_memory_mb",
                                         "cuda_graphs", "iterations")}
                    for st in details["schedules"][tag]["time"]["stages"]] for tag in scheds}
    return {"rows": rows, "stages": stages, "seconds": time.perf_counter() - t, "dtype": dtype or PAPER["dtype"],
            "batch": PAPER["batch"], "iterations": T, "mode": "stage-sampled",
            "score_forwards": {tag: details["schedules"][tag]["time"]["score_forwards"] for tag in scheds}}


def overhead(model: str, steps: int, warmup: int, repeats: int) -> dict:
    from pri.core.engine import InversionConfig
    from pri.files.models import load_model
    from pri.measure.timing import StageSampler

    teacher = load_model(model)
    out = []
    for b, k in ((PAPER["batch"], PAPER["n"]), (PAPER["small_b"], PAPER["small_k"])):
        r = {"model": model, "trajectories": b, "active": k, "dtype": PAPER["dtype"]}
        for graphs in ("auto", "off"):
            cfg = InversionConfig(iterations=PAPER["iterations"], batch=PAPER["batch"], device=DEV, dtype=PAPER["dtype"],
                                  graphs=graphs, progress=False)
            s = StageSampler(teacher, cfg, steps=steps, warmup=warmup, repeats=repeats)
            st = s.step(b, k)
            r["graph_ms" if graphs == "auto" else "eager_ms"] = st["step_seconds"] * 1e3
            r[("graph" if graphs == "auto" else "eager") + "_samples_ms"] = [x * 1e3 for x in st["step_samples"]]
            del s
            if DEV == "cuda":
                torch.cuda.empty_cache()
        r["overhead_removed_ms"] = r["eager_ms"] - r["graph_ms"]
        r["eager_over_graph"] = r["eager_ms"] / r["graph_ms"]
        out.append(r)
    return {"stages": out}


def train_steps(models: tuple, steps: int = 10, warmup: int = 3) -> dict:
    """Seconds per step of the training-side rules at paper scale, as ``pri teacher`` and
    ``pri distill`` run them (bf16 autocast, AdamW / SGD, 224 px, 100 classes):

    - ``finetune``: full fine-tuning step, batch 128, dense (the teacher rule);
    - ``kd_head_only``: SMI's KD step, batch 32, student forward on k of 196 patches with only the
      head trained (paper.yaml's distill), teacher logits precomputed;
    - ``teacher_sparse_fwd``: the teacher's forward on a batch of 512 masked synthetic images;
    - ``eval``: dense forward of 512 test images (the students' and teachers' evaluations).
    """
    import torch.nn.functional as F

    from pri.core.vit import sparse_forward
    from pri.files.models import build_model

    def timed(fn) -> dict:
        for _ in range(warmup):
            fn()
        if DEV == "cuda":
            torch.cuda.synchronize()
        samples = []
        for _ in range(steps):
            t = time.perf_counter()
            fn()
            if DEV == "cuda":
                torch.cuda.synchronize()
            samples.append(time.perf_counter() - t)
        samples.sort()
        return {"seconds": samples[len(samples) // 2], "samples": samples}

    out = []
    img = 224 if DEV == "cuda" else 28
    n = (img // (16 if DEV == "cuda" else 4)) ** 2
    for model in models:
        g = torch.Generator().manual_seed(0)
        m = build_model(model, num_classes=100).to(DEV)
        r = {"model": model, "img_size": img, "patches": n, "amp": "bf16" if DEV == "cuda" else "off"}
        amp = DEV == "cuda"
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        ch = int(m.patch_embed.proj.in_channels)
        x = torch.randn(128, ch, img, img, generator=g).to(DEV)
        y = torch.randint(0, 100, (128,), generator=g).to(DEV)

        def finetune():
            m.train()
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
                lg = m(x)
            loss = F.cross_entropy(lg.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()

        r["finetune"] = {"batch": 128, **timed(finetune)}
        opt = None
        m.requires_grad_(False)
        head = m.get_classifier()
        head.requires_grad_(True)
        hopt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
        r["kd_head_only"] = []
        for k in (n, n // 2, max(1, n // 7)):
            xs = x[:32]
            idx = torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(32)]).to(DEV)
            tl = torch.randn(32, 100, generator=g).to(DEV)

            def kd():
                m.eval()
                with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
                    sl = sparse_forward(m, xs, idx)
                loss = F.kl_div(F.log_softmax(sl.float() / 20, -1), F.softmax(tl / 20, -1), reduction="batchmean")
                hopt.zero_grad(set_to_none=True)
                loss.backward()
                hopt.step()

            r["kd_head_only"].append({"batch": 32, "active": k, **timed(kd)})
        xe = torch.randn(512, ch, img, img, generator=g).to(DEV)
        idx = torch.stack([torch.randperm(n, generator=g)[:n // 2].sort().values for _ in range(512)]).to(DEV)

        @torch.no_grad()
        def evaluate():
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
                m(xe)

        @torch.no_grad()
        def teacher_sparse():
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
                sparse_forward(m, xe, idx)

        r["eval"] = {"batch": 512, **timed(evaluate)}
        r["teacher_sparse_fwd"] = {"batch": 512, "active": n // 2, **timed(teacher_sparse)}
        if DEV == "cuda":
            r["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
            torch.cuda.reset_peak_memory_stats()
        out.append(r)
        m = hopt = x = xe = None  # free before the next model
        if DEV == "cuda":
            torch.cuda.empty_cache()
    return {"models": out, "steps": steps, "warmup": warmup, "what": "median seconds per step"}


def full_vs_sampled() -> dict:
    from pri.core.engine import InversionConfig
    from pri.core.schedules import DMI, PRI
    from pri.files.models import load_model
    from pri.measure.timing import time_schedule

    iterations = PAPER["short_t"]
    teacher = load_model(TINY)
    cfg = InversionConfig(iterations=iterations, batch=PAPER["batch"], device=DEV, dtype=PAPER["dtype"], progress=False)
    out = []
    for tag, s in (("pri_v7", PRI(7)), ("dmi", DMI())):
        f = time_schedule(teacher, s, cfg, mode="full", warmup=3, repeats=2)
        ss = time_schedule(teacher, s, cfg, mode="stage-sampled", steps=10, warmup=4, repeats=3)
        out.append({"tag": tag, "iterations": iterations, "full_s_per_image": f["seconds_per_image"],
                    "full_samples": f["seconds_per_image_samples"], "sampled_s_per_image": ss["seconds_per_image"],
                    "sampled_over_full": ss["seconds_per_image"] / f["seconds_per_image"],
                    "full_peak_memory_mb": f["peak_memory_mb"], "sampled_peak_memory_mb": ss["peak_memory_mb"]})
    return {"runs": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; later sections are skipped past it")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=4, help="per stage (>= graph_warmup + 1 = 3 so capture is excluded)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--only", help="run only this section (comma-separated names)")
    ap.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, the small ViT and tiny sizes: checks this script's plumbing")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.repeats = 3, 3, 2
    global DEV, TINY, SMALL, BASE
    if args.dry_run:
        DEV, TINY, SMALL, BASE = "cpu", "vit_pico_patch4_28", "vit_pico_patch4_28", "vit_pico_patch4_28"
        PAPER.update(iterations=200, batch=14, dtype="fp32", n=49, small_b=2, small_k=7, short_t=28, check_batch=4,
                     check_k=12)
        args.steps, args.warmup, args.repeats = 2, 1, 1
    os.makedirs(args.out, exist_ok=True)
    summary = {"sections": {}, "budget_s": args.budget, "dry_run": args.dry_run, "steps": args.steps,
               "warmup": args.warmup, "repeats": args.repeats, "sizes": dict(PAPER)}
    info = env_info()
    dump(args.out, "env.json", info)
    print(json.dumps(info), flush=True)
    if not torch.cuda.is_available() and not args.dry_run:
        summary["error"] = "no CUDA device visible to torch"
        dump(args.out, "summary.json", summary)
        print("no GPU: nothing to check", flush=True)
        return 1
    # (name, function, args, rough seconds it needs on an H200)
    sections = [
        ("correctness", correctness, (8, args.deterministic), 40),
        ("correctness_deterministic", correctness_deterministic, (), 60),
        ("paper_deit_tiny_patch16_224", paper, (TINY, args.steps, args.warmup, args.repeats), 60),
        # config/paper.yaml inverts in fp32 (TF32 matmuls): the GPU-hours table is built from these
        ("paper_fp32_deit_tiny_patch16_224", paper, (TINY, args.steps, args.warmup, args.repeats, "fp32"), 60),
        ("paper_fp32_deit_base_patch16_224", paper, (BASE, args.steps, args.warmup, args.repeats, "fp32"), 90),
        ("train_steps", train_steps, ((TINY, SMALL, BASE),), 60),
        ("paper_deit_base_patch16_224", paper, (BASE, args.steps, args.warmup, args.repeats), 90),
        ("overhead_deit_tiny_patch16_224", overhead, (TINY, args.steps, args.warmup, args.repeats), 20),
        ("overhead_deit_base_patch16_224", overhead, (BASE, args.steps, args.warmup, args.repeats), 30),
        ("full_vs_sampled", full_vs_sampled, (), 60),
    ]
    if args.only:
        sections = [sec for sec in sections if sec[0] in args.only.split(",")]
    for name, fn, fargs, need in sections:
        if elapsed() + need > args.budget:
            summary["sections"][name] = {"status": "skipped", "reason": f"budget: {elapsed():.0f} s used, ~{need} s needed"}
            print(f"[{elapsed():6.1f}s] {name}: skipped (budget)", flush=True)
            continue
        t = time.perf_counter()
        print(f"[{elapsed():6.1f}s] {name} ...", flush=True)
        try:
            res = fn(*fargs)
            dump(args.out, f"{name}.json", res)
            summary["sections"][name] = {"status": "ok", "seconds": time.perf_counter() - t}
            _print(name, res)
        except Exception as e:  # noqa: BLE001 - record and go on to the next section
            summary["sections"][name] = {"status": "error", "error": f"{type(e).__name__}: {e}",
                                         "traceback": traceback.format_exc()[-4000:]}
            print(f"{name}: ERROR {type(e).__name__}: {e}", flush=True)
        if DEV == "cuda":
            torch.cuda.empty_cache()
        dump(args.out, "summary.json", {**summary, "elapsed_s": elapsed()})
    summary["elapsed_s"] = elapsed()
    dump(args.out, "summary.json", summary)
    print(f"done in {elapsed():.0f} s -> {args.out}", flush=True)
    return 0


def _print(name: str, res: dict) -> None:
    if name.startswith("correctness"):
        for r in res["stage"] + res["grad"] + res["run"]:
            print("   ", r, flush=True)
    elif name == "train_steps":
        for r in res["models"]:
            print(f"   {r['model']}: finetune b128 {r['finetune']['seconds'] * 1e3:.1f} ms, KD b32 "
                  + ", ".join(f"k={d['active']}:{d['seconds'] * 1e3:.1f}ms" for d in r["kd_head_only"])
                  + f", eval b512 {r['eval']['seconds'] * 1e3:.1f} ms, teacher sparse b512 "
                  f"{r['teacher_sparse_fwd']['seconds'] * 1e3:.1f} ms", flush=True)
    elif name.startswith("paper_"):
        from pri.measure.cost import speedups

        over = {k: speedups(res["rows"], k) for k in ("time_seconds_per_image", "cost_macs_total")}
        for r in res["rows"]:
            print(f"   {r['tag']:<8s} {r['time_seconds_per_image']:.4f} s/img  x DMI time "
                  f"{over['time_seconds_per_image'].get(r['tag'], 0):.2f}  x DMI MACs "
                  f"{over['cost_macs_total'].get(r['tag'], 0):.2f}  peak {r['time_peak_memory_mb']:.0f} MB", flush=True)
        for tag, sts in res["stages"].items():
            print(f"   {tag}: " + ", ".join(f"{s['active']}@{s['trajectories']}:{s['step_seconds'] * 1e3:.2f}ms"
                                          for s in sts), flush=True)
    elif name.startswith("overhead"):
        for r in res["stages"]:
            print(f"   b={r['trajectories']} k={r['active']}: eager {r['eager_ms']:.2f} ms, graph {r['graph_ms']:.2f} ms,"
                  f" removed {r['overhead_removed_ms']:.2f} ms", flush=True)
    else:
        for r in res["runs"]:
            print(f"   {r['tag']}: full {r['full_s_per_image'] * 1e3:.2f} ms/img, sampled "
                  f"{r['sampled_s_per_image'] * 1e3:.2f} ms/img ({r['sampled_over_full']:.3f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
