"""The ``pri`` command. Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args)``; bad input raises PriError, printed here as one
line naming the option and the fix, with a non-zero exit."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from pri.errors import PriError

SUBCOMMANDS = {
    "invert": ("pri.tasks.invert", "run DMI, SMI or PRI inversion and write a pool file"),
    "teacher": ("pri.tasks.teacher", "train (or load and evaluate) a teacher with provenance"),
    "distill": ("pri.tasks.distill", "distil a student from synthetic pools; top-1 on the real test set"),
    "efficiency": ("pri.measure.efficiency", "cost model, fvcore MACs and wall-clock per generated image"),
    "quantize": ("pri.tasks.quantize", "fake-quantise a teacher calibrated on synthetic, noise or real images; top-1/top-5 on the real test set"),
}

BATCH_SEP = "::"  # pri batch's command separator; the workflow passes every value as --key=value


def batch_argv(commands: list[list]) -> list[str]:
    """Arguments of ``pri batch``: several pri commands run one after the other in one process."""
    out = []
    for i, c in enumerate(commands):
        out += ([BATCH_SEP] if i else []) + [str(a) for a in c]
    return out


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where the help text does not already say its default, and
    not for options whose default is None or a flag's False."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False) or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; subcommand modules are imported only for the subcommand asked for."""
    parser = argparse.ArgumentParser(prog="pri", description="Data-free model inversion of Vision Transformers")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("batch", help="run several pri commands in one process: pri batch CMD ARGS [:: CMD ARGS ...]")
    for name, (modname, help_) in SUBCOMMANDS.items():
        if name != only:
            sub.add_parser(name, help=help_)
            continue
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0],
                           formatter_class=HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _prog=f"pri {name}")
    return parser


class Terminated(BaseException):
    """SIGTERM (a Slurm time limit, a kill): raised so that partial outputs are removed on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


BATCH_HELP = """usage: pri batch COMMAND ARGS [{sep} COMMAND ARGS ...]

Run several pri commands one after the other in one process (how the workflow runs its jobs,
without paying Python's start-up per command). Every command is parsed and its options checked
before the first one runs; the batch stops at the first command that fails, with its exit status.
Commands: {commands}. Example:

  pri batch invert --model vit_pico_patch4_28 --schedule dmi --iterations 8 --batch 8 --out a.pt {sep} \\
            invert --model vit_pico_patch4_28 --schedule pri_v2 --iterations 8 --batch 8 --out b.pt"""


def _check(argv: list[str]) -> int:
    """Parse one command of a batch and run its option checks (no work): 0, or the exit status of
    the refusal, which is printed as the command itself would print it."""
    parser = build_parser(argv[0])
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    check = getattr(importlib.import_module(SUBCOMMANDS[argv[0]][0]), "check_options", None)
    try:
        if check is not None:
            check(args)
    except PriError as e:
        print(f"{args._prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def split_batch(argv: list[str]) -> list[list[str]]:
    """``pri batch``'s argument list cut at every separator into its commands."""
    parts, cur = [], []
    for a in argv:
        if a == BATCH_SEP:
            parts.append(cur)
            cur = []
        else:
            cur.append(a)
    return parts + [cur]


def batch(argv: list[str]) -> int:
    """``pri batch CMD ARGS [:: CMD ARGS ...]``: run several pri commands one after the other in one
    process (the workflow's jobs, without paying Python's start-up per command); stops at the first
    that fails, with its exit status. Each command writes its own outputs atomically."""
    if not argv or argv[0] in ("-h", "--help"):
        print(BATCH_HELP.format(sep=BATCH_SEP, commands=", ".join(SUBCOMMANDS)))
        return 0 if argv else 2
    parts = split_batch(argv)
    if not all(parts) or any(p[0] in ("batch",) or p[0] not in SUBCOMMANDS for p in parts):
        print(f"pri batch: error: give pri commands separated by {BATCH_SEP}, e.g. pri batch invert ... {BATCH_SEP} "
              f"invert ... (commands: {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    for i, p in enumerate(parts, 1):  # every command is parsed and checked before the first runs
        rc = _check(p)
        if rc:
            print(f"pri batch: command {i} of {len(parts)} (pri {p[0]}) is refused above; nothing was run",
                  file=sys.stderr)
            return rc
    for i, p in enumerate(parts, 1):
        print(f"pri batch: [{i}/{len(parts)}] pri {' '.join(p)}", file=sys.stderr, flush=True)
        rc = main(p)
        if rc:
            return rc
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "batch":
        return batch(argv[1:])
    only = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only if only in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = args._run(args)
    except PriError as e:
        print(f"{args._prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args._prog}: interrupted; no output was written", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{args._prog}: terminated (SIGTERM); no output was written", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
