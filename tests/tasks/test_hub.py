"""'hub' as a checkpoint path: timm's pretrained weights from the Hugging Face hub. Exercised
offline through the local hub cache, which is where an online machine puts the download."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pri.files.models import sha256_file

ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "timm/deit_tiny_patch16_224.fb_in1k"  # timm's default pretrained tag of deit_tiny_patch16_224


def _offline_env(cache: Path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf_home"))


def _fill_cache(cache: Path, state_dict: dict) -> Path:
    """The hub cache layout that huggingface_hub writes: refs/main -> snapshots/<commit>/file."""
    from safetensors.torch import save_file

    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    path = snap / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def _teacher_cmd(tmp_path, data):
    out, mj = tmp_path / "t.pt", tmp_path / "t.json"
    return [sys.executable, "-m", "pri", "teacher", "--dataset", "cifar10", "--data-root", str(data),
            "--model", "deit_tiny_patch16_224", "--init-checkpoint", "hub", "--epochs", "1", "--batch", "2",
            "--limit-train", "4", "--lr", "1e-4", "--warmup", "0", "--limit-test", "2", "--eval-batch", "2",
            "--threads", "1", "--no-progress", "--out", str(out), "--metrics", str(mj)], out, mj


def test_teacher_fine_tunes_from_hub_weights(tmp_path):
    import timm

    from test_teacher import _fake_cifar10

    torch.manual_seed(0)
    imnet = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    weights = _fill_cache(tmp_path / "cache", imnet.state_dict())
    _fake_cifar10(tmp_path / "cifar", n=2)
    cmd, out, mj = _teacher_cmd(tmp_path, tmp_path / "cifar")
    r = subprocess.run(cmd, env=_offline_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(mj.read_text())
    init = m["recipe"]["init_checkpoint"]
    assert m["recipe"]["mode"] == "fine-tune"
    assert init["hub_id"] == HUB_ID and init["sha256"] == sha256_file(str(weights))
    trained = torch.load(out, weights_only=True)
    sd = trained.get("state_dict", trained.get("model", trained))
    w0, w1 = imnet.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"]
    assert (w1 - w0).abs().max() < 0.05 and not torch.equal(w0, w1)  # started from the hub weights


def test_hub_weights_missing_offline_is_a_clear_error(tmp_path):
    from test_teacher import _fake_cifar10

    _fake_cifar10(tmp_path / "cifar", n=2)
    cmd, out, _ = _teacher_cmd(tmp_path, tmp_path / "cifar")
    r = subprocess.run(cmd, env=_offline_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and not out.exists()
    assert "--init-checkpoint" in r.stderr and f"could not get {HUB_ID}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow  # four Snakemake and pre-flight runs (30 s): pytest --all and CI run it
def test_preflight_checks_hub_weights(tmp_path):
    """`snakemake -n` with 'hub' teachers and students: weights that cannot be had are listed under
    their config key; weights found in the hub cache are not."""
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    for t in cfg["teachers"].values():
        if t.get("init_checkpoint"):
            t["init_checkpoint"] = "hub"
        if t.get("student_checkpoint"):
            t["student_checkpoint"] = "hub"
    path = tmp_path / "paper_hub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n", "--quiet", "rules",
           "--configfile", str(path)]
    r = subprocess.run(cmd, cwd=tmp_path, env=_offline_env(tmp_path / "cache"), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "teachers.deit_tiny_cifar100.init_checkpoint" in out and f"{HUB_ID} is not in the local hub cache" in out
    assert "pri.workflow.preflight" in out and "--fetch-hub" in out  # planning only looks; it says how to fetch
    assert "teachers.deit_tiny_cifar100.student_checkpoint" in out
    # asked to fetch (offline here): it tries the hub, and says it could not
    pre = [sys.executable, "-m", "pri.workflow.preflight", "--configfile", str(path)]
    r = subprocess.run(pre + ["--fetch-hub"], cwd=tmp_path, env=_offline_env(tmp_path / "cache"), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 1 and f"could not get {HUB_ID}" in r.stdout, r.stdout + r.stderr
    assert "config key teachers.deit_tiny_cifar100.init_checkpoint" in r.stdout and "Traceback" not in r.stderr

    import timm

    _fill_cache(tmp_path / "cache", timm.create_model("deit_tiny_patch16_224", pretrained=False).state_dict())
    r = subprocess.run(cmd, cwd=tmp_path, env=_offline_env(tmp_path / "cache"), capture_output=True, text=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, r.stderr[-3000:]
    assert "teachers.deit_tiny_cifar100.init_checkpoint" not in out  # found in the cache
    assert "teachers.deit_tiny_cifar100.data_root" in out  # the data is still missing
    assert "teachers.deit_small_cifar100.init_checkpoint" in out  # no DeiT-S weights in the cache
    r = subprocess.run(pre, cwd=tmp_path, env=_offline_env(tmp_path / "cache"), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1 and "deit_tiny_cifar100.init_checkpoint" not in r.stdout, r.stdout + r.stderr
    assert "config key teachers.deit_small_cifar100.init_checkpoint" in r.stdout


def test_invert_takes_hub_weights_at_another_image_size(tmp_path):
    """``pri invert --checkpoint hub`` as in the other commands; the 224-px weights are resampled to
    a 32-px grid, and the pool's ledger records the hub id and the grid they came from."""
    import timm

    torch.manual_seed(0)
    weights = _fill_cache(tmp_path / "cache", timm.create_model("deit_tiny_patch16_224").state_dict())
    out = tmp_path / "pool.pt"
    cmd = [sys.executable, "-m", "pri", "invert", "--model", "deit_tiny_patch16_224", "--checkpoint", "hub",
           "--img-size", "32", "--schedule", "pri_v2", "--iterations", "2", "--batch", "2", "--threads", "1",
           "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, env=_offline_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    teacher = torch.load(out, weights_only=True)["ledger"]["teacher"]
    assert teacher["hub_id"] == HUB_ID and teacher["sha256"] == sha256_file(str(weights))
    assert teacher["pos_embed_resampled_from"] == [14, 14] and teacher["img_size"] == 32
