"""Range checks of numbers, shared by the commands' options (``check_options``) and the workflow
config's keys (pri.workflow.config): a value is a finite number (or an integer) within its bounds, or a
PriError naming the option or key, e.g. ``--lr: must be a finite number > 0, got nan``."""
from __future__ import annotations

import math
from numbers import Integral, Real

from pri.errors import PriError

SEED_MAX = 2**63 - 1


def option_of(dest: str) -> str:
    """The command-line option of an argparse ``dest`` (or of a config key): grad_clip -> --grad-clip."""
    return "--" + dest.replace("_", "-")


def _show(x) -> str:
    return "2^63 - 1" if x == SEED_MAX else str(x)


def describe(lo=None, hi=None, lo_open: bool = False, hi_open: bool = False) -> str:
    """The range in words: ``> 0``, ``>= 2``, ``<= 16``, ``in [0, 1)``; empty when unbounded."""
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_show(lo)}, {_show(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_show(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_show(hi)}"
    return ""


def range_error(value, integer: bool = False, lo=None, hi=None, lo_open: bool = False,
                hi_open: bool = False) -> str | None:
    """Why ``value`` is not a finite number (an integer with ``integer``) in the range, or None."""
    what = "an integer" if integer else "a finite number"
    bounds = describe(lo, hi, lo_open, hi_open)
    wrong = f"must be {what}{' ' + bounds if bounds else ''}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        return wrong
    if not integer and not math.isfinite(value):
        return wrong
    if lo is not None and (value <= lo if lo_open else value < lo):
        return wrong
    if hi is not None and (value >= hi if hi_open else value > hi):
        return wrong
    return None


def number(value, name: str, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` if it is a finite number in the range, else a PriError naming ``name``."""
    why = range_error(value, False, lo, hi, lo_open, hi_open)
    if why:
        raise PriError(name, why)
    return value


def positive(value, name: str) -> float:
    return number(value, name, lo=0, lo_open=True)


def non_negative(value, name: str) -> float:
    return number(value, name, lo=0)


def integer(value, name: str, lo=None, hi=None) -> int:
    """``value`` if it is an integer in [lo, hi], else a PriError naming ``name``."""
    why = range_error(value, True, lo, hi)
    if why:
        raise PriError(name, why)
    return value


def seed(value, name: str = "--seed") -> int:
    """A seed: an integer in [0, 2^63 - 1] (torch's generators take no more)."""
    return integer(value, name, 0, SEED_MAX)


def schema_bounds(schema: dict) -> dict:
    """The range of a JSON-schema number (minimum, exclusiveMinimum, ...) as ``range_error``'s keywords."""
    out = {}
    for side, incl, excl in (("lo", "minimum", "exclusiveMinimum"), ("hi", "maximum", "exclusiveMaximum")):
        if excl in schema:
            out[side], out[f"{side}_open"] = schema[excl], True
        elif incl in schema:
            out[side] = schema[incl]
    return out


def memory_bytes() -> int:
    """Physical memory of this machine."""
    import os

    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits_memory(count: int, name: str, bytes_each: int = 1, fix: str = "") -> int:
    """``count`` if ``count`` items of at least ``bytes_each`` bytes can fit in this machine's memory
    (a bound that needs no model: an image holds at least one byte), else a PriError naming ``name``."""
    have = memory_bytes()
    if count * bytes_each > have:
        shown = f"{count:.3g}" if count >= 1e15 else str(count)
        raise PriError(name, f"{shown} images cannot fit in this machine's memory ({have / 2**30:.3g} GiB, at least "
                       f"{bytes_each} byte(s) an image): lower {name}{' ' + fix if fix else ''}")
    return count


ITERATIONS_MAX = 2**31 - 1  # a pool's per-patch update counts are int32 (pri.core.engine)


def iterations(value, name: str) -> int:
    """An iteration count T that can be counted where it is used: an integer >= 1, at most 2^31 - 1 (a
    pool records each patch's updates in int32) and such that the cost model's list of the active
    patch count at every iteration (pri.core.schedules.Schedule.active_counts: 8 bytes an entry) fits in memory."""
    integer(value, name, 1)
    limit = min(ITERATIONS_MAX, memory_bytes() // 8)
    if value > limit:
        raise PriError(name, f"{value} iterations cannot be counted: a pool records each patch's updates in int32 "
                       f"(at most 2^31 - 1) and the cost model lists every iteration's active patches (8 bytes each, "
                       f"{memory_bytes() / 2**30:.3g} GiB here): lower {name} to {limit} or less")
    return value


MIN_BITS, MAX_BITS = 2, 16  # the bit widths a fake-quantised setting may take


def settings_of(w_bits: list[int], a_bits: list[int]) -> list[tuple[int, int]]:
    """Pair --w-bits and --a-bits position by position (a single value is broadcast)."""
    for opt, bits in (("--w-bits", w_bits), ("--a-bits", a_bits)):
        bad = [b for b in bits if not MIN_BITS <= b <= MAX_BITS]
        if bad:
            raise PriError(opt, f"{bad} outside {MIN_BITS}..{MAX_BITS} bits: give bit widths such as 8, 6 or 4")
    if len(w_bits) != len(a_bits) and 1 not in (len(w_bits), len(a_bits)):
        raise PriError("--a-bits", f"{len(a_bits)} values for {len(w_bits)} --w-bits values: give one value, or one "
                       "per --w-bits value (they pair position by position)")
    n = max(len(w_bits), len(a_bits))
    pairs = list(zip(w_bits * n if len(w_bits) == 1 else w_bits, a_bits * n if len(a_bits) == 1 else a_bits))
    dup = [f"W{w}A{a}" for i, (w, a) in enumerate(pairs) if (w, a) in pairs[:i]]
    if dup:
        raise PriError("--w-bits", f"setting {dup[0]} given twice: list each (--w-bits, --a-bits) pair once")
    return pairs
