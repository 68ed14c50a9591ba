"""Atomic writes (every output appears complete under its final name, or not at all), the
runtime set-up the commands share (threads, device, bf16 autocast), provenance and progress."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile

import torch

from pri.errors import PriError


def check_seed(seed: int, option: str = "--seed") -> None:
    from pri.checks import seed as check

    check(seed, option)


def umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path next to ``path``; when the block ends without error it is renamed to
    ``path`` (so a reader sees the whole file or none), with the permissions the umask gives a new
    file (a temporary file is private to its writer otherwise). Temporaries left by a killed
    writer of the same file are removed first; an error (or SIGTERM, see pri.cli) removes ours.
    A failed write (a full disk, a quota, an I/O error) is one line naming the file and why."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    base = os.path.basename(path)
    for stale in glob.glob(os.path.join(glob.escape(d), "." + glob.escape(base) + ".*.part")):
        if "." in os.path.basename(stale)[len(base) + 2:-len(".part")]:
            continue  # another file's temporary (e.g. of base.timing.json): tempfile's random part has no dot
        try:
            os.remove(stale)
        except OSError:
            pass
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".part", dir=d)
    except OSError as e:
        raise write_error(path, e) from e
    os.close(fd)
    try:
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~umask())
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(path, e) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_error(path: str, e: BaseException) -> PriError:
    """A failed write as one line: the OS's reason (torch.save wraps it in a RuntimeError; then the
    free space of the folder decides whether to say the disk is full)."""
    import errno
    import shutil

    cause = e if isinstance(e, OSError) else next((c for c in (e.__cause__, e.__context__) if isinstance(c, OSError)), None)
    if cause is not None and cause.errno == errno.ENOSPC:
        why = "no space left on device"
    elif cause is not None and cause.strerror:
        why = cause.strerror[0].lower() + cause.strerror[1:]
    else:
        try:
            full = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < 1 << 20
        except OSError:
            full = False
        why = "no space left on device" if full else f"the write failed ({type(e).__name__})"
    return PriError(path, f"cannot write ({why}); nothing was written: free space or choose another place, then "
                    "run again")


# what differs between two runs of the same work: kept out of outputs, written to their timing side file
TIMING_KEYS = ("wall_seconds", "seconds_per_image", "peak_memory_mb", "peak_memory_kind")


def split_timing(obj):
    """(``obj`` without the TIMING_KEYS of its ``ledger``, those keys) for a dict with a ledger (a
    pool); (obj, {}) otherwise. ``obj`` itself is left as it is."""
    led = obj.get("ledger") if isinstance(obj, dict) else None
    if not isinstance(led, dict) or not any(k in led for k in TIMING_KEYS):
        return obj, {}
    timing = {k: led[k] for k in TIMING_KEYS if k in led}
    return {**obj, "ledger": {k: v for k, v in led.items() if k not in TIMING_KEYS}}, timing


def atomic_torch_save(obj, path: str) -> None:
    """torch.save, atomically, through an open file: torch names the archive inside after the file
    it is given, so saving to the temporary's name would put a random name into the bytes. A
    ledger's timings go to the side file ``timing_path(path)``, so the same work gives the same bytes."""
    obj, timing = split_timing(obj)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
        except RuntimeError as e:  # torch's writer wraps the OS's error
            raise write_error(path, e) from e
    if timing:
        with_timing(path, timing)


def with_timing(path: str, timing: dict) -> None:
    """Write the timing side file of the output ``path`` just written; if that fails, the output
    goes too (an output without its timings would look complete)."""
    try:
        write_timing(path, timing)
    except BaseException:
        os.remove(path)
        raise


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def input_path(path: str) -> str:
    """How an output's provenance names an input (its sha256 identifies it): relative to the working
    directory where it lies inside it (the workflow's ``results/<run>/...``), else absolute. Two runs
    of the same work, in one folder or in two clones, record the same names: the same bytes."""
    full, here = os.path.abspath(path), os.getcwd()
    return os.path.relpath(full, here) if os.path.commonpath([full, here]) == here else full


def timing_path(path: str) -> str:
    """The side file of ``path`` that holds what differs between two runs of the same work
    (wall-clock seconds, peak memory): ``<path>.timing.json``. The output itself stays the same
    bytes for the same work."""
    return path + ".timing.json"


def write_timing(path: str, timing: dict) -> None:
    """Write ``timing`` (seconds, peak memory) next to the output ``path``, atomically."""
    atomic_write_json(timing_path(path), timing)


def read_timing(path: str) -> dict:
    """The timing side file of output ``path`` ({} when there is none, e.g. an older result)."""
    try:
        with open(timing_path(path)) as f:
            out = json.load(f)
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def check_distinct(outputs: dict, inputs: dict) -> None:
    """Refuse, before any work, an output that is one of the command's inputs or another of its
    outputs, naming both options. ``outputs`` and ``inputs`` map options to a path, a list of paths
    or None; 'hub' (timm's weights) is not a path."""
    def entries(d):
        for opt, val in d.items():
            for p in ([val] if isinstance(val, (str, os.PathLike)) else (val or [])):
                if p and str(p) != "hub":
                    yield opt, str(p)

    outs, ins = list(entries(outputs)), list(entries(inputs))
    for i, (o_opt, o) in enumerate(outs):
        for other_opt, other in outs[:i] + ins:
            if _same_file(o, other):
                what = "an input" if (other_opt, other) in ins else "another output"
                raise PriError(o_opt, f"{o} is also {other_opt} ({what}): writing it would destroy that file; give "
                               f"{o_opt} another path")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_writable(path: str, option: str = "--out") -> None:
    """Fail now, before any work, if ``path`` cannot be written (its folder cannot be made or
    written, it is a folder, or its parent is a file)."""
    p = os.path.abspath(path)
    if os.path.isdir(p):
        raise PriError(option, f"{path} is a directory: give a file name")
    d = os.path.dirname(p)
    probe = d
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise PriError(option, f"cannot write {path}: {probe} is a file, not a folder")
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(p) + ".", suffix=".part", dir=d)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise PriError(option, f"cannot write {path} ({e.strerror or type(e).__name__}): choose a writable place") from e
    if os.path.exists(p) and not os.access(p, os.W_OK):
        raise PriError(option, f"cannot write {path}: the file is read-only")


def resave_hint(path: str) -> str:
    """How to turn a checkpoint holding Python objects (e.g. DeiT's argparse.Namespace under 'args')
    into one of tensors, once, on a machine where its origin is trusted."""
    base = os.path.splitext(path)[0]
    return (f"only if you trust its origin, re-save its weights as tensors once: python -c \"import torch; "
            f"c = torch.load('{path}', weights_only=False); torch.save(c.get('model', c), '{base}.weights.pth')\" "
            f"and give {base}.weights.pth")


def safe_torch_load(path: str, option: str, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` with one-line errors naming ``option``. The file's
    structure decides the message, never an exception's text: a torch archive that references
    Python globals beyond tensors and plain containers (a pickle that could run code) is refused
    by name, anything else unreadable is said to be so."""
    import pickletools
    import zipfile

    if not os.path.exists(path):
        raise PriError(option, f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise PriError(option, f"{path} is not a file")
    if os.path.getsize(path) == 0:
        raise PriError(option, f"{path} is empty (0 bytes); write it again")
    if zipfile.is_zipfile(path):
        from torch.serialization import get_unsafe_globals_in_checkpoint

        try:
            unsafe = get_unsafe_globals_in_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - a damaged archive: said as such below
            raise PriError(option, f"{path} is not a readable torch file ({type(e).__name__})") from e
        if unsafe:
            raise PriError(option, f"refused to load {path}: it references Python objects beyond tensors and plain "
                           f"containers ({', '.join(sorted(unsafe)[:3])}), so loading it could run code; "
                           + resave_hint(path))
    else:
        try:
            with open(path, "rb") as f:
                ops = {op.name for op, _, _ in pickletools.genops(f)}
        except Exception as e:  # noqa: BLE001 - not a pickle at all
            raise PriError(option, f"{path} is not a torch file (neither a torch.save archive nor a pickle)") from e
        if ops & {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}:
            raise PriError(option, f"refused to load {path}: a raw pickle referencing Python objects (loading it could "
                           "run code); " + resave_hint(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated or damaged
        raise PriError(option, f"{path} is not a readable torch file ({type(e).__name__}); write it again") from e
