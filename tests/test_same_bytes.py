"""Same work, same bytes: rerunning pri teacher, invert, distill and quantize with the same arguments
(only the output paths differ) gives byte-identical checkpoints, pools and metrics; the seconds and
peak memory live in the ``<out>.timing.json`` side files, the only files allowed to differ."""
import hashlib
import subprocess
import sys

from pri.cli import BATCH_SEP

COMMON = ["--seed", "0", "--threads", "1", "--device", "cpu", "--no-progress"]


def _commands(inputs, out):
    """The four commands of one run, writing under ``out``; every input is read from ``inputs``."""
    t, p = str(inputs / "teacher.pt"), str(inputs / "pool.pt")
    return [
        ["teacher", "--dataset", "digits", "--model", "vit_pico_patch2_8", "--epochs", "0.5", "--batch", "64",
         "--out", str(out / "teacher.pt"), "--metrics", str(out / "teacher.json")],
        ["invert", "--model", "vit_pico_patch2_8", "--checkpoint", t, "--schedule", "pri_v2", "--iterations", "6",
         "--batch", "20", "--out", str(out / "pool.pt")],
        ["distill", "--pool", p, "--teacher", t, "--student", "vit_pico_patch2_8", "--steps", "3", "--batch", "8",
         "--images", "20", "--limit-test", "50", "--out", str(out / "distill.json"),
         "--student-out", str(out / "student.pt")],
        ["quantize", "--teacher", t, "--pool", p, "--calib-images", "10", "--limit-test", "50",
         "--out", str(out / "quantize.json")],
    ]


def _run(inputs, out):
    out.mkdir()
    argv = []
    for cmd in _commands(inputs, out):
        argv += ([BATCH_SEP] if argv else []) + cmd + COMMON
    r = subprocess.run([sys.executable, "-m", "pri", "batch", *argv], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in out.iterdir()}


def test_rerunning_a_command_gives_the_same_bytes(tmp_path):
    a = _run(tmp_path / "a", tmp_path / "a")  # the first run makes the teacher and pool both runs read
    b = _run(tmp_path / "a", tmp_path / "b")
    outputs = {"teacher.pt", "teacher.json", "pool.pt", "distill.json", "student.pt", "quantize.json"}
    timings = {f"{name}.timing.json" for name in outputs - {"student.pt"}}
    assert set(a) == set(b) == outputs | timings
    differ = sorted(name for name in outputs if a[name] != b[name])
    assert not differ, f"the same work gave other bytes: {differ}"


def test_inputs_are_named_relative_to_the_working_directory(tmp_path, monkeypatch):
    """Two clones running the same workflow name their inputs alike (results/<run>/...), so their
    metrics are the same bytes; a file outside the working directory keeps its absolute path."""
    from pri.files.io import input_path

    outside = tmp_path / "elsewhere" / "teacher.pt"
    for clone in ("one", "two"):
        (tmp_path / clone / "results").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / clone)
        assert input_path("results/default/pools/p.pt") == "results/default/pools/p.pt"
        assert input_path(str(tmp_path / clone / "results" / "x.pt")) == "results/x.pt"
        assert input_path(str(outside)) == str(outside)
        assert input_path(str(tmp_path / f"{clone}-sibling" / "t.pt")) == str(tmp_path / f"{clone}-sibling" / "t.pt")
