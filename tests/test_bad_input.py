"""Bad input fails before the work, in one line naming the option, with nothing left behind; outputs
respect the umask; a terminated writer leaves no temporary (README: "What bad input gets")."""
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from pri.cli import main
from pri.files.io import atomic_path, atomic_write_json
from pri.files.models import build_model, save_checkpoint

INV = ["invert", "--model", "vit_pico_patch4_28", "--method", "pri", "--v", "4", "--iterations", "8", "--batch", "8",
       "--device", "cpu", "--no-progress", "--threads", "1"]
EFF = ["efficiency", "--model", "vit_pico_patch4_28", "--iterations", "20", "--batch", "4", "--what", "cost",
       "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    teacher = d / "teacher.pt"
    save_checkpoint(str(teacher), build_model("vit_pico_patch4_28"), "vit_pico_patch4_28", (0.5,), (0.5,),
                    {"recipe": {"dataset": "fashion_mnist"}})
    nan = build_model("vit_pico_patch4_28").state_dict()
    nan["head.weight"] = torch.full_like(nan["head.weight"], float("nan"))
    torch.save(nan, d / "nan.pth")
    (d / "empty.pt").write_bytes(b"")
    (d / "text.pt").write_text("just some text\n" * 10)
    pool = d / "pool.pt"
    assert main(INV + ["--checkpoint", str(teacher), "--out", str(pool)]) == 0
    empty_pool = torch.load(pool, weights_only=True)
    for k in ("images", "masks", "labels", "trajectory", "stage", "updates"):
        empty_pool[k] = empty_pool[k][:0]
    torch.save(empty_pool, d / "pool0.pt")
    no_ledger = torch.load(pool, weights_only=True)
    del no_ledger["ledger"]
    torch.save(no_ledger, d / "noledger.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'PWNED'}",))

    torch.save({"images": Evil()}, d / "evil.pt")
    ro = d / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    (d / "afile").write_text("x")
    return d


BAD = [
    # pri invert
    (INV + ["--lr", "-1"], "--lr"),
    (INV + ["--lr", "nan"], "--lr"),
    (INV + ["--tv-weight", "-1"], "--tv-weight"),
    (INV + ["--jitter", "2"], "--jitter"),
    (INV + ["--num-classes", "0"], "--num-classes"),
    (INV + ["--img-size", "7"], "--img-size"),
    (INV + ["--seed", "99999999999999999999"], "--seed"),
    (INV + ["--score-layer", "99"], "--score-layer"),
    (INV + ["--checkpoint", "{d}/nan.pth"], "--checkpoint"),
    (INV + ["--checkpoint", "{d}/text.pt"], "--checkpoint"),
    (INV + ["--checkpoint", "{d}/evil.pt"], "--checkpoint"),
    (INV + ["--checkpoint", "{d}/teacher.pt", "--out@", "{d}/teacher.pt"], "--out"),
    (INV + ["--out@", "/proc/x.pt"], "--out"),
    (INV + ["--out@", "/sys/pri_x.pt"], "--out"),
    (INV + ["--out@", "{d}"], "--out"),
    (INV + ["--out@", "{d}/afile/x.pt"], "--out"),
    (INV + ["--schedule", "pri_v4"], "--method"),  # both a tag and --method
    (INV[:3] + ["--schedule", "pri_v4", "--rerank-every", "5"] + INV[7:], "--rerank-every"),
    # pri efficiency
    (EFF + ["--schedules", "pri_v0"], "--schedules"),
    (EFF + ["--schedules", "smi_default", "--img-size", "30"], "--img-size"),
    (EFF + ["--schedules", "standard", "--vs", "100"], "--vs"),
    (EFF + ["--schedules", "nope_v2"], "--schedules"),
    # pri distill
    (["distill", "--pool", "{d}/empty.pt", "--teacher", "{d}/teacher.pt"], "--pool"),
    (["distill", "--pool", "{d}/pool0.pt", "--teacher", "{d}/teacher.pt"], "--pool"),
    (["distill", "--pool", "{d}/evil.pt", "--teacher", "{d}/teacher.pt"], "--pool"),
    (["distill", "--pool", "{d}/noledger.pt", "--teacher", "{d}/teacher.pt"], "--teacher"),
    (["distill", "--pool", "{d}/pool.pt", "--teacher", "{d}/teacher.pt", "--lr", "nan"], "--lr"),
    (["distill", "--pool", "{d}/pool.pt", "--teacher", "{d}/teacher.pt", "--kd-runs", "0", "--probe-runs", "0"], "--kd-runs"),
    # pri teacher
    (["teacher", "--dataset", "digits", "--model", "vit_pico_patch2_8", "--out@", "{d}/t.pt", "--metrics",
      "/proc/m.json"], "--metrics"),
    (["teacher", "--dataset", "digits", "--model", "vit_pico_patch2_8", "--out@", "{d}/t.pt", "--lr", "inf"], "--lr"),
]
# NaN, infinities and out-of-range numbers of every command (pri.checks), before any work
TEA = ["teacher", "--dataset", "digits", "--model", "vit_pico_patch2_8", "--out@", "{d}/t.pt"]
QUA = ["quantize", "--teacher", "{d}/teacher.pt", "--calibration", "noise"]
DIS = ["distill", "--pool", "{d}/pool.pt", "--teacher", "{d}/teacher.pt"]
BAD += [
    (TEA + ["--weight-decay", "nan"], "--weight-decay"),
    (TEA + ["--grad-clip", "nan"], "--grad-clip"),
    (TEA + ["--warmup", "inf"], "--warmup"),
    (TEA + ["--workers", "-1"], "--workers"),
    (TEA + ["--epochs", "nan"], "--epochs"),
    (TEA + ["--label-smoothing", "nan"], "--label-smoothing"),
    (TEA + ["--num-classes", "1"], "--num-classes"),
    (INV + ["--batch", "1000000000000"], "--batch"),
    (INV + ["--iterations", "0"], "--iterations"),
    (INV + ["--jitter", "nan"], "--jitter"),
    (QUA + ["--seed", "18446744073709551616"], "--seed"),
    (QUA + ["--draws", "0"], "--draws"),
    (QUA + ["--w-bits", "8", "8"], "--w-bits"),
    (QUA + ["--calib-images", "1000000000000"], "--calib-images"),
    (DIS + ["--temperature", "inf"], "--temperature"),
    (DIS + ["--momentum", "nan"], "--momentum"),
    (DIS + ["--warmup", "-1"], "--warmup"),
    (EFF + ["--batch", "0"], "--batch"),
    # counts beyond what memory (or an int32 count) holds: refused before any work (issue 21)
    (DIS + ["--batch", "1000000000000"], "--batch"),
    (DIS + ["--images", "1000000000000"], "--images"),
    (EFF + ["--what", "flops", "--batch", "1000000000000"], "--batch"),
    (EFF + ["--iterations", "1000000000000"], "--iterations"),
    (INV + ["--iterations", "1000000000000"], "--iterations"),
    (INV + ["--iterations", str(2**31)], "--iterations"),  # a pool counts updates in int32
]


@pytest.mark.parametrize("argv,option", BAD, ids=[f"{a[0]}-{o}-{i}" for i, (a, o) in enumerate(BAD)])
def test_one_line_naming_the_option_before_any_work(argv, option, files, tmp_path, capsys):
    argv = [a.replace("{d}", str(files)) for a in argv]
    out = str(tmp_path / "out.pt")
    if "--out@" in argv:
        i = argv.index("--out@")
        argv[i], out = "--out", argv[i + 1]
    else:
        argv += ["--out", out]
    before = set(os.listdir(tmp_path)) | set(os.listdir(files))
    t0 = time.perf_counter()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and f"error: {option}:" in lines[0], err
    assert "Traceback" not in err and "weights_only=False to" not in err
    assert set(os.listdir(tmp_path)) | set(os.listdir(files)) == before  # nothing written, nothing left
    assert time.perf_counter() - t0 < 30  # refused before the work (a second or two of loading at most)
    assert not (files / "PWNED").exists()


def test_outputs_respect_the_umask(tmp_path):
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            p = tmp_path / f"m{mask:o}.json"
            atomic_write_json(str(p), {"a": 1})
            assert (p.stat().st_mode & 0o777) == mode, oct(p.stat().st_mode)
        finally:
            os.umask(old)
    # a real command's output too (tempfile would have made it 0600 whatever the umask)
    old = os.umask(0o022)
    try:
        assert main(INV + ["--out", str(tmp_path / "pool.pt")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "pool.pt").stat().st_mode & 0o777 == 0o644


def test_stale_temporaries_are_cleaned_and_errors_leave_none(tmp_path):
    target = tmp_path / "pool.pt"
    stale = tmp_path / ".pool.pt.abc123.part"  # what a SIGKILL during a save leaves
    stale.write_bytes(b"half")
    with atomic_path(str(target)) as tmp:
        assert not stale.exists()
        with open(tmp, "wb") as f:
            f.write(b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path) == ["pool.pt"]
    with pytest.raises(RuntimeError):
        with atomic_path(str(tmp_path / "other.pt")) as tmp:
            open(tmp, "wb").write(b"partial")
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path)) == ["pool.pt"]


def test_sigterm_leaves_no_output_and_no_temporary(tmp_path):
    """Slurm sends SIGTERM at a time limit: the command stops with exit 143 and writes nothing."""
    out = tmp_path / "pool.pt"
    argv = [sys.executable, "-m", "pri", "invert", "--model", "vit_pico_patch4_28", "--method", "dmi",
            "--iterations", "100000", "--batch", "8", "--no-progress", "--device", "cpu", "--threads", "1",
            "--out", str(out)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "terminated" in err, err
    assert os.listdir(tmp_path) == []


def test_pickle_in_a_pool_is_refused_without_running_it(files, capsys):
    rc = main(["distill", "--pool", str(files / "evil.pt"), "--teacher", str(files / "teacher.pt"),
               "--out", str(files / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "refused" in err and "could run code" in err and not (files / "PWNED").exists()
    with open(files / "evil.pt", "rb"):  # the file would run code with an unsafe loader
        pass
    assert pickle is not None


BAD_POOL_FIELDS = {
    "images float": ("images", lambda t: t.float() / 255),
    "masks uint8": ("masks", lambda t: t.to(torch.uint8)),
    "labels float": ("labels", lambda t: t.double() + 0.5),
    "trajectory float": ("trajectory", lambda t: t.float()),
    "stage too short": ("stage", lambda t: t[:-1]),
    "updates float": ("updates", lambda t: t.float()),
    "trajectory a list": ("trajectory", lambda t: t.tolist()),
}


@pytest.mark.parametrize("case", list(BAD_POOL_FIELDS))
def test_a_pool_with_a_wrong_dtype_is_one_line_naming_the_field(case, files, tmp_path, capsys):
    key, change = BAD_POOL_FIELDS[case]
    pool = torch.load(files / "pool.pt", weights_only=True)
    pool[key] = change(pool[key])
    torch.save(pool, tmp_path / "bad.pt")
    for argv in (["distill", "--teacher", str(files / "teacher.pt"), "--steps", "2"],
                 ["quantize", "--teacher", str(files / "teacher.pt"), "--calib-images", "4"]):
        rc = main(argv + ["--pool", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "out.json")])
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "error: --pool:" in lines[0] and key in lines[0], lines
        assert str(tmp_path / "bad.pt") in lines[0] and sorted(os.listdir(tmp_path)) == ["bad.pt"]


def _image_tree(root, corrupt, where):
    """Two classes of 12-px PNGs under train/ and val/, one of them damaged by ``corrupt``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    bad = root / where / "dog" / "2.png"
    bad.write_bytes(corrupt(bad.read_bytes()))
    return bad


CORRUPT = {"garbage": lambda b: b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "truncated": lambda b: b[:len(b) // 2],
           "empty": lambda b: b""}


@pytest.mark.parametrize("kind,where,workers", [("garbage", "train", 0), ("truncated", "train", 1),
                                                ("empty", "val", 0)])
def test_a_corrupt_image_is_one_line_naming_the_file(kind, where, workers, tmp_path, capsys):
    """Not PIL's traceback from the middle of training (or of a DataLoader worker): one line naming
    the file, and no output."""
    bad = _image_tree(tmp_path / "data", CORRUPT[kind], where)
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["teacher", "--dataset", "imagefolder", "--data-root", str(tmp_path / "data"), "--model",
               "vit_pico_patch2_8", "--epochs", "1", "--batch", "4", "--workers", str(workers), "--threads", "1",
               "--device", "cpu", "--no-progress", "--out", str(out / "t.pt"), "--metrics", str(out / "t.json")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("pri teacher: error: --data-root: ") and f"{bad}: not a readable image" in lines[0]
    assert os.listdir(out) == []


# An output that is one of the command's inputs (or another of its outputs): refused before any
# work, one line naming both options, the input untouched (issue 21's probes, each pair)
T, P = "{d}/teacher.pt", "{d}/pool.pt"
DIST = ["distill", "--pool", P, "--teacher", T, "--steps", "2"]
QUAN = ["quantize", "--teacher", T, "--pool", P]
SAME_FILE = [
    (DIST + ["--out", T], "--out", "--teacher", T),
    (DIST + ["--out", P], "--out", "--pool", P),
    (DIST + ["--out", "{t}/d.json", "--student-out", T], "--student-out", "--teacher", T),
    (DIST + ["--out", "{t}/d.json", "--student-out", "{t}/d.json"], "--student-out", "--out", None),
    (QUAN + ["--out", T], "--out", "--teacher", T),
    (QUAN + ["--out", P], "--out", "--pool", P),
    (["teacher", "--checkpoint", T, "--dataset", "digits", "--metrics", T], "--metrics", "--checkpoint", T),
    (["teacher", "--model", "vit_pico_patch4_28", "--dataset", "digits", "--init-checkpoint", T, "--out", T,
      "--metrics", "{t}/m.json"], "--out", "--init-checkpoint", T),
    (["efficiency", "--model", "vit_pico_patch4_28", "--checkpoint", T, "--out", T, "--what", "cost"], "--out",
     "--checkpoint", T),
]


@pytest.mark.parametrize("argv,option,other,kept", SAME_FILE,
                         ids=[f"{a[0]}-{o}-is-{b}" for a, o, b, _ in SAME_FILE])
def test_an_output_that_is_an_input_is_refused_naming_both(argv, option, other, kept, files, tmp_path, capsys):
    import hashlib

    argv = [a.replace("{d}", str(files)).replace("{t}", str(tmp_path)) for a in argv]
    digest = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files.iterdir() if f.is_file()}
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and f"error: {option}:" in lines[0] and other in lines[0], err
    assert {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files.iterdir() if f.is_file()} == digest
    assert os.listdir(tmp_path) == []  # nothing written


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a full disk for real (needs root and mount; CI runs as root)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the full-disk test needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(files, tiny_disk, capsys):
    """invert (a pool), teacher (a checkpoint) and distill (a student) on a disk with no room: exit 2,
    one line naming the file and saying the disk is full, no traceback, no partial file."""
    jobs = [
        (INV + ["--batch", "64", "--checkpoint", str(files / "teacher.pt")], "pool.pt"),
        (["teacher", "--dataset", "digits", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--epochs", "0.01",
          "--limit-train", "8", "--limit-test", "8", "--threads", "1", "--no-progress"], "teacher.pt"),
        (DIS + ["--steps", "1", "--batch", "2", "--student", "vit_femto_patch4_28", "--limit-test", "8",
                "--probe-runs", "0", "--threads", "1", "--no-progress", "--out", str(tiny_disk.parent / "d.json")],
         "student.pt"),
    ]
    for argv, name in jobs:
        target = tiny_disk / name
        argv = [a.replace("{d}", str(files)) for a in argv]
        argv += ["--student-out" if argv[0] == "distill" else "--out", str(target)]
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and str(target) in lines[-1] and "no space left on device" in lines[-1], err
        assert "Traceback" not in err and os.listdir(tiny_disk) == [], (name, os.listdir(tiny_disk))
