"""`pri invert`: the pool-file contract, bad input, safe checkpoint loading."""
import hashlib
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from pri.cli import main
from pri.files.models import build_model

BASE = ["invert", "--model", "vit_pico_patch4_28", "--iterations", "8", "--batch", "8", "--seed", "0",
        "--no-progress", "--device", "cpu"]


def _run(args, tmp_path, capsys):
    out = tmp_path / "pool.pt"
    rc = main(BASE + args + ["--out", str(out)])
    err = capsys.readouterr().err
    return rc, err, out


def test_pool_file_contract(tmp_path, capsys):
    rc, err, out = _run(["--method", "pri", "--v", "4"], tmp_path, capsys)
    assert rc == 0, err
    pool = torch.load(out, weights_only=True)
    assert pool["images"].dtype == torch.uint8 and pool["images"].shape == (8, 1, 28, 28)
    assert pool["masks"].dtype == torch.bool and pool["masks"].shape == (8, 49)
    for k in ("labels", "trajectory", "stage"):
        assert pool[k].dtype == torch.int64 and pool[k].shape == (8,)
    led = pool["ledger"]
    assert led["method"] == "pri" and led["v"] == 4 and led["iterations"] == 8
    assert len(led["active_tokens"]) == 8 and led["images_out"] == 8
    assert led["teacher"]["model"] == "vit_pico_patch4_28" and led["teacher"]["sha256"] == "random-init"
    assert "wall_seconds" not in led and "peak_memory_mb" not in led  # measurements: in the timing side file
    timing = json.loads((tmp_path / "pool.pt.timing.json").read_text())
    assert timing["wall_seconds"] > 0 and timing["peak_memory_mb"] > 0
    assert sorted(os.listdir(tmp_path)) == ["pool.pt", "pool.pt.timing.json"]  # no temporary left behind


BAD = [
    (["--method", "pri", "--v", "4", "--model", "not_a_vit"], "--model"),
    (["--method", "pri", "--v", "0"], "--v"),
    (["--method", "pri", "--v", "50"], "--v"),
    (["--method", "pri", "--v", "9", "--batch", "20"], "--iterations"),
    (["--method", "pri", "--v", "4", "--batch", "3"], "--batch"),
    (["--method", "dmi", "--batch", "0"], "--batch"),
    (["--method", "smi", "--prune-at", "2", "4", "--prune-ratio", "0.3"], "--prune-ratio"),
    (["--method", "smi", "--prune-at", "2", "4", "--prune-ratio", "0.3", "1.0"], "--prune-ratio"),
    (["--method", "smi", "--prune-at", "2", "4", "--prune-ratio", "0", "0.5"], "--prune-ratio"),
    (["--method", "smi", "--prune-at", "2", "40"], "--prune-at"),
    (["--method", "dmi", "--v", "4"], "--v"),
    (["--method", "dmi", "--checkpoint", "/nonexistent/teacher.pth"], "--checkpoint"),
    # options the registry does not list for the method: refused, not ignored
    (["--method", "pri", "--v", "4", "--rerank-every", "5"], "--rerank-every"),
    (["--method", "smi_rerank", "--v", "4", "--prune-at", "2", "4"], "--prune-at"),
    (["--method", "dmi", "--score", "random"], "--score"),
    (["--method", "pri"], "--v"),
    (["--method", "smi", "--v", "4", "--prune-at", "2", "4"], "--v"),
]


@pytest.mark.parametrize("args,option", BAD)
def test_bad_input_is_one_line_naming_the_option(args, option, tmp_path, capsys):
    rc, err, out = _run(args, tmp_path, capsys)
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"error: {option}:" in lines[0], err
    assert not out.exists() and os.listdir(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_gpu(tmp_path, capsys):
    rc, err, out = _run(["--method", "dmi", "--device", "cuda"], tmp_path, capsys)
    assert rc != 0 and "--device" in err and not out.exists()


def test_corrupt_and_mismatched_checkpoints(tmp_path, capsys):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"this is not a checkpoint")
    rc, err, _ = _run(["--method", "dmi", "--checkpoint", str(bad)], tmp_path, capsys)
    assert rc != 0 and "--checkpoint" in err and "is not a torch file" in err
    shallow = tmp_path / "shallow.pth"  # another architecture: 3 blocks where the model has 4
    torch.save(build_model("vit_femto_patch4_28").state_dict(), shallow)
    rc, err, _ = _run(["--method", "dmi", "--checkpoint", str(shallow)], tmp_path, capsys)
    assert rc != 0 and "--checkpoint" in err and "does not fit" in err
    assert not (tmp_path / "pool.pt").exists()
    seven = tmp_path / "seven.pth"  # a foreign state_dict's head says how many classes it has
    torch.save(build_model("vit_pico_patch4_28", num_classes=7).state_dict(), seven)
    rc, err, out = _run(["--method", "dmi", "--checkpoint", str(seven)], tmp_path, capsys)
    assert rc == 0, err
    assert torch.load(out, weights_only=True)["ledger"]["teacher"]["num_classes"] == 7
    rc, err, _ = _run(["--method", "dmi", "--checkpoint", str(seven), "--num-classes", "10"], tmp_path, capsys)
    assert rc != 0 and "does not fit" in err


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Evil(marker)}, f)
    rc, err, out = _run(["--method", "dmi", "--checkpoint", str(evil)], tmp_path, capsys)
    assert rc != 0 and "--checkpoint" in err and "refused" in err
    assert not marker.exists() and not out.exists()
    # the same file *would* run code with an unsafe loader: the test is not vacuous
    with open(evil, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_safetensors_and_state_dict_checkpoints_carry_their_sha256(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    sd = build_model("vit_pico_patch4_28").state_dict()
    st = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    pth = tmp_path / "teacher.pth"
    torch.save({"model": sd}, pth)  # DeiT's layout
    pools = []
    for ck in (st, pth):
        rc, err, out = _run(["--method", "dmi", "--checkpoint", str(ck)], tmp_path, capsys)
        assert rc == 0, err
        pools.append(torch.load(out, weights_only=True))
        assert pools[-1]["ledger"]["teacher"]["sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    # the two files hold the same weights, so the pools are identical
    assert torch.equal(pools[0]["images"], pools[1]["images"])


def test_help_documents_every_option():
    r = subprocess.run([sys.executable, "-m", "pri", "invert", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for opt in ("--model", "--checkpoint", "--num-classes", "--img-size", "--method", "--v", "--prune-at",
                "--prune-ratio", "--score", "--iterations", "--batch", "--seed", "--device", "--dtype", "--out"):
        assert opt in r.stdout


def test_real_process_exit_code_and_no_output(tmp_path):
    out = tmp_path / "p.pt"
    r = subprocess.run([sys.executable, "-m", "pri", *BASE, "--method", "pri", "--v", "0", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--v" in r.stderr and not out.exists()


def test_pri_batch_must_be_a_multiple_of_v(tmp_path, capsys):
    rc, err, out = _run(["--schedule", "pri_v4", "--batch", "6"], tmp_path, capsys)
    assert rc != 0 and "--batch" in err and "multiple of 4" in err and not out.exists()


def test_a_checkpoint_with_python_objects_says_how_to_resave_it(tmp_path, capsys):
    """DeiT's released files hold an argparse.Namespace next to the weights: refused (loading it
    could run code), with a command that re-saves the weights, which then load."""
    import argparse
    import shlex
    import subprocess
    import sys

    torch.manual_seed(0)
    deit_like = tmp_path / "deit.pth"
    torch.save({"model": build_model("vit_pico_patch4_28").state_dict(), "args": argparse.Namespace(lr=1.0)},
               deit_like)
    rc, err, out = _run(["--method", "dmi", "--checkpoint", str(deit_like)], tmp_path, capsys)
    assert rc == 2 and "could run code" in err and not out.exists()
    cmd = err.split("python -c ", 1)[1].split(" and give ")[0]
    subprocess.run([sys.executable, "-c", shlex.split(cmd)[0]], check=True, cwd=tmp_path)
    rc, err, out = _run(["--method", "dmi", "--checkpoint", str(tmp_path / "deit.weights.pth")], tmp_path, capsys)
    assert rc == 0, err


@pytest.mark.parametrize("kw,tag,options", [
    (dict(method="pri", v=4), "pri_v4", {}),
    (dict(method="pri", v=4, score="random"), "pri_random_v4", {}),
    (dict(method="smi"), "smi_default", {}),
    (dict(method="smi", v=7), "smi_v7", {}),
    (dict(method="smi", prune_at=[2, 4], prune_ratio=[0.3, 0.3]), "smi", {"prune_at": [2, 4], "prune_ratio": [0.3, 0.3]}),
    (dict(method="smi", score="random", prune_at=[2]), "smi", {"prune_at": [2], "score": "random"}),
    (dict(method="smi_rerank", v=2, rerank_every=5), "smi_rerank_v2", {"rerank_every": 5}),
    (dict(method="dmi_updates", v=7), "dmi_updates_v7", {}),
])
def test_method_options_map_to_the_registrys_tags(kw, tag, options):
    from pri.options import spec_from_options

    spec, got = spec_from_options(**kw)
    assert (spec.tag, got) == (tag, options)
