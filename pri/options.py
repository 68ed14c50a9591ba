"""The command-line option groups the commands share, each written once: the runtime options
(--threads, --device, --no-progress; --amp for the training commands; --dtype, --no-tf32 and
--no-graphs for the inversion commands, their defaults taken from pri.core.engine.InversionConfig)
and the schedule options of ``pri invert`` and ``pri efficiency`` (a tag, or --method with its
options, read through the method registry of pri.core.schedules)."""
from __future__ import annotations

from dataclasses import fields

from pri.core.engine import InversionConfig
from pri.core.schedules import OPTIONS, REGISTRY, SCORES, Spec, tag_help
from pri.errors import PriError

INVERSION = {f.name: f.default for f in fields(InversionConfig)}


def add_runtime_options(p, amp: bool = False, inversion: bool = False, device_help: str = "where to run") -> None:
    """--threads, --device and --no-progress; ``amp``: --amp (bf16 autocast of training);
    ``inversion``: --dtype, --no-tf32 and --no-graphs of the inversion engine."""
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--device", default=INVERSION["device"], metavar="{auto,cpu,cuda[:N]}", help=device_help)
    if amp:
        p.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                       help="bf16 autocast (auto: on for cuda, off for cpu)")
    if inversion:
        p.add_argument("--dtype", default=INVERSION["dtype"], choices=["fp32", "bf16"], help="fp32, or bf16 autocast")
        p.add_argument("--no-tf32", action="store_true", help="disable TF32 matmuls on GPU")
        p.add_argument("--no-graphs", action="store_true", help="do not capture stages as CUDA graphs on GPU")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_schedule_arguments(p, many: bool = False) -> None:
    """The schedule options of ``pri invert`` (one schedule) and ``pri efficiency`` (``many``)."""
    g = p.add_argument_group("schedule: a method tag, or --method with its options")
    g.add_argument("--schedule", metavar="TAG", help=f"the method as a tag: {tag_help()}")
    if many:
        g.add_argument("--schedules", nargs="+", metavar="TAG",
                       help="several schedules in one job: tags as for --schedule, or 'standard' (DMI, SMI's default, "
                            "and per --vs SMI at matched sparsity, SMI*, PRI and PRI with random selection)")
        g.add_argument("--vs", type=int, nargs="+", default=[2, 4, 7], metavar="V",
                       help="division factors of --schedules standard")
    g.add_argument("--method", choices=sorted(REGISTRY), help="the method by name instead of a tag (see --schedule)")
    g.add_argument("--v", type=int, help="division factor v (PRI: images per trajectory, detach at k*floor(T/v); "
                                         "SMI, SMI with re-ranking, the DMI control: PRI's sparsity / updates at v)")
    g.add_argument("--score", default=None, choices=list(SCORES),
                   help="patch importance of --method pri or smi: last-block CLS attention (default), or random "
                        "(the Re-Birth ablation)")
    g.add_argument("--prune-at", type=int, nargs="+", metavar="I",
                   help="SMI prune iterations (default: the public 50 100 200 300 of 4000, scaled to --iterations)")
    g.add_argument("--prune-ratio", type=float, nargs="+", metavar="R",
                   help="SMI fraction pruned at each prune iteration, one per --prune-at (default 0.3 each)")
    g.add_argument("--prune-keep", type=int, nargs="+", metavar="K",
                   help="SMI active count after each prune iteration, instead of --prune-ratio")
    g.add_argument("--rerank-every", type=int, default=None, metavar="R",
                   help="smi_rerank: re-choose the active set over all patches every R iterations after the first "
                        "prune (default: T // 10)")


def specs_from_args(args, many: bool = False) -> list[tuple[Spec, dict]]:
    """(spec, options) of each schedule a command line asks for; ``standard`` stays a name for the
    caller to expand. Options that do not go with the method are refused, naming them."""
    tags = list(getattr(args, "schedules", None) or [])
    given = [o for o in ("schedule", "method") if getattr(args, o, None)] + (["schedules"] if tags else [])
    if len(given) != 1:
        which = "--schedule TAG, --schedules TAG... or --method" if many else "--schedule TAG or --method"
        raise PriError("--" + (given[-1] if given else "schedule"),
                       f"give exactly one of {which} (e.g. --schedule pri_v4, or --method pri --v 4)")
    opts = {"prune_at": args.prune_at, "prune_ratio": args.prune_ratio, "prune_keep": args.prune_keep,
            "rerank_every": args.rerank_every}
    if args.method:
        return [spec_from_options(args.method, args.v, args.score or "cls_attn", args.prune_at, args.prune_ratio,
                                  args.prune_keep, args.rerank_every)]
    for name, flag in (("v", "--v"), ("score", "--score")):
        if getattr(args, name) is not None:
            raise PriError(flag, f"{flag} goes with --method; a tag already says it (e.g. --schedule pri_random_v4)")
    if args.schedule:
        return [(Spec.parse(args.schedule, "--schedule"), {k: x for k, x in opts.items() if x is not None})]
    if any(x is not None for x in opts.values()):
        bad = next(k for k, x in opts.items() if x is not None)
        raise PriError(OPTIONS[bad], f"{OPTIONS[bad]} goes with --schedule or --method (one schedule), not --schedules")
    return [(None, {"standard": True}) if t == "standard" else (Spec.parse(t, "--schedules"), {}) for t in tags]


def spec_from_options(method: str, v: int | None = None, score: str = "cls_attn", prune_at=None,
                      prune_ratio=None, prune_keep=None, rerank_every=None) -> tuple[Spec, dict]:
    """``pri invert --method M [--v V] [--score S] [--prune-...] [--rerank-every R]`` as a (spec,
    options) pair, read from the registry: an option the method does not list, or a division
    factor it does not take, is refused naming the option."""
    m = REGISTRY.get(method)
    if m is None:
        raise PriError("--method", f"unknown method {method!r}: choose one of {', '.join(REGISTRY)}")
    given = {k: x for k, x in (("prune_at", prune_at), ("prune_ratio", prune_ratio), ("prune_keep", prune_keep),
                               ("rerank_every", rerank_every)) if x is not None and x != []}
    if score != "cls_attn" and not (m.random_variant and score == "random"):
        given["score"] = score
    for k in given:
        if k not in m.options:
            takers = [n for n, r in REGISTRY.items() if k in r.options] + (
                [n for n, r in REGISTRY.items() if r.random_variant] if k == "score" else [])
            raise PriError(OPTIONS[k], f"--method {method} takes no {OPTIONS[k]} (the methods that do: {', '.join(takers)})")
    if v is not None and m.v == "none":
        raise PriError("--v", f"--method {method} takes no division factor")
    if score == "random" and m.random_variant:
        method = m.random_variant
    if m.v == "optional" and v is not None and set(given) & {"prune_at", "prune_ratio", "prune_keep", "score"}:
        raise PriError("--v", "give either --v (SMI at PRI's sparsity) or explicit prune options, not both")
    if m.plain and v is None and not given:
        method = m.plain
    if m.v == "required" and v is None:
        raise PriError("--v", f"--method {method} needs a division factor, e.g. --v 4")
    spec = Spec(method, v)
    spec.check("--v")
    return spec, given
