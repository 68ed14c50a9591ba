"""pri distill: masked feeding, bucketing by mask size, determinism, budgets, class filter, confidence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helper import main

from pri.core.engine import Augment
from pri.files.io import read_timing
from pri.files.models import build_model, load_model, save_checkpoint
from pri.tasks.distill import EpochOrder, kd_loss

MODEL = "vit_pico_patch2_8"  # 8 px digits, 4x4 = 16 patches of 2 px
GRID, P, N = 4, 2, 16
TIMING = ("train_seconds", "wall_seconds")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A suite checkpoint of a (random-weight) digits teacher; its provenance names the dataset."""
    d = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=10)
    path = str(d / "teacher.pt")
    save_checkpoint(path, model, MODEL, (0.3,), (0.4,), {"recipe": {"dataset": "digits"}, "test_top1": None})
    return path, load_model(MODEL, path).provenance


def pixel_mask(mask: torch.Tensor) -> torch.Tensor:
    """[M, N] patch mask -> [M, 1, 8, 8] pixel mask."""
    m = mask.view(-1, 1, GRID, GRID)
    return m.repeat_interleave(P, 2).repeat_interleave(P, 3)


def make_pool(path, teacher_prov, ks=(4, 8, 16), per_k=6, seed=0, labels=None, fill_outside=False, method="pri"):
    g = torch.Generator().manual_seed(seed)
    masks = []
    for k in ks:
        for _ in range(per_k):
            m = torch.zeros(N, dtype=torch.bool)
            m[torch.randperm(N, generator=g)[:k]] = True
            masks.append(m)
    masks = torch.stack(masks)
    M = len(masks)
    images = torch.randint(0, 256, (M, 1, 8, 8), generator=g, dtype=torch.uint8)
    inside = pixel_mask(masks)
    images = torch.where(inside, images, torch.zeros_like(images))
    if fill_outside:  # garbage where the mask is off: must not matter
        noise = torch.randint(1, 256, images.shape, generator=torch.Generator().manual_seed(seed + 99), dtype=torch.uint8)
        images = torch.where(inside, images, noise)
    if labels is None:
        labels = torch.arange(M) % 10
    ledger = {"method": method, "v": 4, "score": "cls_attn", "iterations": 24, "images_out": M, "seed": seed,
              "active_per_iteration": list(range(200)), "teacher": teacher_prov}
    torch.save({"images": images, "masks": masks, "labels": torch.as_tensor(labels, dtype=torch.int64),
                "trajectory": torch.arange(M), "stage": torch.zeros(M, dtype=torch.int64), "ledger": ledger}, path)
    return path


def distill(tmp_path, teacher_path, pools, *extra, name="m.json"):
    out = str(tmp_path / name)
    args = ["distill", "--pool", *pools, "--teacher", teacher_path, "--student", MODEL, "--dataset", "digits", "--steps", "12",
            "--batch", "8", "--warmup", "2", "--limit-test", "60", "--threads", "1", "--no-progress",
            "--out", out, *extra]
    rc = main(args)
    if rc != 0:
        return rc, None
    with open(out) as f:
        return rc, json.load(f)


def strip(m):
    out = {k: v for k, v in m.items() if k not in TIMING + ("pools", "teacher_seconds", "runs")}
    out["runs"] = [{k: v for k, v in r.items() if k not in TIMING} for r in m["runs"]]
    return out


def test_only_masked_patches_matter(tmp_path, teacher):
    tpath, tprov = teacher
    a = make_pool(str(tmp_path / "a.pt"), tprov)
    b = make_pool(str(tmp_path / "b.pt"), tprov, fill_outside=True)
    pa, pb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert not torch.equal(pa["images"], pb["images"])
    _, ma = distill(tmp_path, tpath, [a], name="a.json")
    _, mb = distill(tmp_path, tpath, [b], name="b.json")
    for key in ("top1", "per_class", "confidence", "label_counts", "mask_sizes"):
        assert ma[key] == mb[key], key  # bit for bit
    assert strip(ma)["runs"] == strip(mb)["runs"]
    assert ma["pools"][0]["sha256"] != mb["pools"][0]["sha256"]


def test_mixed_mask_sizes_and_metrics(tmp_path, teacher):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov, ks=(3, 5, 16), per_k=(7))
    rc, m = distill(tmp_path, tpath, [pool], "--eval-every", "5", "--val")
    assert rc == 0
    assert m["mask_sizes"] == {"3": 7, "5": 7, "16": 7} and m["images"] == 21 and m["steps"] == 12
    hist = m["runs"][0]["history"]
    assert [h["step"] for h in hist] == [5, 10, 12] and all("val_top1" in h for h in hist)
    assert m["top1"] == hist[-1]["top1"] and m["val_top1"] == hist[-1]["val_top1"]
    assert "top1_best" not in m  # nothing is selected on the test set
    # batches mix mask sizes (padded): on average more than one size's worth of tokens per step
    assert 3 * 8 < m["runs"][0]["patch_tokens_per_step"] <= 16 * 8
    assert len(m["per_class"]) == 10 and m["method"] == "pri" and m["pool_params"]["v"] == 4
    assert "active_per_iteration" not in m["pool_params"]  # long series are left out
    assert m["teacher"]["provenance"]["sha256"] == tprov["sha256"]
    assert m["student"]["name"] == MODEL and m["student"]["provenance"]["init"] == "random"
    conf = m["confidence"]
    assert conf["synthetic"]["n"] == 21 and conf["real_test"]["n"] == 60
    assert conf["wasserstein1"] >= 0 and 0 <= conf["ks"] <= 1
    hp = m["hyperparameters"]
    assert hp["temperature"] == 4.0 and hp["optimizer"] == "adamw" and hp["seed"] == 0
    assert m["versions"]["torch"] == torch.__version__ and "wall_seconds" not in m  # same work, same bytes
    timing = read_timing(str(tmp_path / "m.json"))
    assert timing["wall_seconds"] > 0 and len(timing["train_seconds_runs"]) == 1


def test_same_seed_identical_other_seed_differs(tmp_path, teacher):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov)
    _, m1 = distill(tmp_path, tpath, [pool], "--images", "12", name="1.json")
    _, m2 = distill(tmp_path, tpath, [pool], "--images", "12", name="2.json")
    _, m3 = distill(tmp_path, tpath, [pool], "--images", "12", "--seed", "1", name="3.json")
    assert strip(m1) == strip(m2)
    assert m1["runs"][0]["final_loss_ema"] != m3["runs"][0]["final_loss_ema"]


def test_images_budget(tmp_path, teacher, capsys):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov)  # 18 images
    rc, _ = distill(tmp_path, tpath, [pool], "--images", "19")
    assert rc == 2 and "--images" in capsys.readouterr().err
    # two pools are concatenated
    pool2 = make_pool(str(tmp_path / "q.pt"), tprov, seed=1)
    rc, m = distill(tmp_path, tpath, [pool, pool2], "--images", "20")
    assert rc == 0 and m["images"] == 20 and m["images_available"] == 36 and len(m["pools"]) == 2
    assert m["label_counts"] == [2] * 10  # balanced over the classes
    # 3 of each class: classes 8 and 9 hold only 2 images each
    rc, _ = distill(tmp_path, tpath, [pool, pool2], "--images", "30")
    assert rc == 2 and "class 8 has 2 images" in capsys.readouterr().err


def test_classes_filter(tmp_path, teacher, capsys):
    tpath, tprov = teacher
    labels = [3] * 5 + [7] * 13
    pool = make_pool(str(tmp_path / "p.pt"), tprov, labels=labels)
    rc, m = distill(tmp_path, tpath, [pool], "--classes", "3")
    assert rc == 0 and m["images"] == 5 and m["images_available"] == 5 and m["classes"] == [3]
    assert m["label_counts"][3] == 5 and sum(m["label_counts"]) == 5
    assert len(m["per_class"]) == 10  # still evaluated on every class
    rc, _ = distill(tmp_path, tpath, [pool], "--classes", "3", "--images", "6")
    assert rc == 2 and "--images" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--classes", "12")
    assert rc == 2 and "--classes" in capsys.readouterr().err


def test_bad_inputs_name_options(tmp_path, teacher, capsys):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov)
    other = dict(tprov, sha256="0" * 64)
    foreign = make_pool(str(tmp_path / "f.pt"), other)
    rc, _ = distill(tmp_path, tpath, [foreign])
    assert rc == 2 and "--teacher" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [foreign], "--allow-other-teacher")
    assert rc == 0
    rc, _ = distill(tmp_path, tpath, [str(tmp_path / "missing.pt")])
    assert rc == 2 and "--pool" in capsys.readouterr().err
    torch.save({"images": torch.zeros(2, 1, 8, 8)}, tmp_path / "notpool.pt")
    rc, _ = distill(tmp_path, tpath, [str(tmp_path / "notpool.pt")])
    assert rc == 2 and "--pool" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--head-only")
    assert rc == 2 and "--head-only" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--student", "vit_femto_patch4_28")
    assert rc == 2 and "--student" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--student", "not_a_vit")
    err = capsys.readouterr().err
    assert rc == 2 and "--student: unknown model 'not_a_vit'" in err, err
    rc, _ = distill(tmp_path, tpath, [pool], "--teacher-model", "vit_femto_patch4_28")
    err = capsys.readouterr().err
    assert rc == 2 and "--teacher-model" in err and "--model" not in err, err


def test_dataset_from_teacher_provenance(tmp_path, teacher):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov, ks=(16,))
    out = str(tmp_path / "m.json")
    assert main(["distill", "--pool", pool, "--teacher", tpath, "--student", MODEL, "--steps", "2", "--batch", "4", "--threads", "1",
                 "--no-progress", "--limit-test", "10", "--augment", "--out", out]) == 0
    with open(out) as f:
        m = json.load(f)
    assert m["test"]["dataset"] == "digits" and m["hyperparameters"]["augment"] is True


def test_head_only_trains_only_the_head(tmp_path, teacher):
    tpath, tprov = teacher
    torch.manual_seed(1)
    pre = build_model(MODEL, num_classes=10)
    spath = str(tmp_path / "student.pt")
    save_checkpoint(spath, pre, MODEL, (0.3,), (0.4,), {"pretrained": "test"})
    pool = make_pool(str(tmp_path / "p.pt"), tprov)
    sout = str(tmp_path / "s_out.pt")
    rc, m = distill(tmp_path, tpath, [pool], "--student", MODEL, "--student-checkpoint", spath, "--head-only",
                    "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "1e-4",
                    "--temperature", "20", "--eval-every", "4", "--student-out", sout)
    assert rc == 0
    assert m["student"]["provenance"]["new_head"] is True
    assert m["student"]["provenance"]["trainable_params"] == 64 * 10 + 10
    after = torch.load(sout, weights_only=True)["state_dict"]
    before = pre.state_dict()
    for k, v in before.items():
        if k.startswith("head."):
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), k


def test_epoch_order_visits_every_image_once_per_epoch():
    o = EpochOrder(20, 8, torch.Generator().manual_seed(0))
    batches = [o.next() for _ in range(9)]  # 3 epochs of 8 + 8 + 4
    assert [len(b) for b in batches] == [8, 8, 4] * 3
    for e in range(3):
        assert sorted(torch.cat(batches[3 * e:3 * e + 3]).tolist()) == list(range(20))
    assert not torch.equal(torch.cat(batches[:3]), torch.cat(batches[3:6]))  # a new order each epoch
    o2 = EpochOrder(20, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(b, o2.next()) for b in batches)


def test_methods_of_a_seed_are_paired(tmp_path, teacher):
    """Two pools of the same size (different images, masks of different sizes) get the same image
    selection, data order, augmentations and student initialisation from the same seed."""
    tpath, tprov = teacher
    a = make_pool(str(tmp_path / "a.pt"), tprov, ks=(16,), per_k=18, seed=1)
    b = make_pool(str(tmp_path / "b.pt"), tprov, ks=(3, 5, 7), per_k=6, seed=2)
    from pri.tasks import distill as D

    seen = {}
    orig = D.train

    def spy(args, run, model, norm, targets, syn, aug, device, amp, evaluate_fn, progress):
        seen.setdefault("order", []).append(syn.order.clone())
        seen.setdefault("init", []).append({k: v.clone() for k, v in model.state_dict().items()})
        return orig(args, run, model, norm, targets, syn, aug, device, amp, evaluate_fn, progress)

    D.train = spy
    try:
        _, ma = distill(tmp_path, tpath, [a], "--images", "12", "--augment", name="a.json")
        _, mb = distill(tmp_path, tpath, [b], "--images", "12", "--augment", name="b.json")
    finally:
        D.train = orig
    assert torch.equal(seen["order"][0], seen["order"][1])
    assert all(torch.equal(seen["init"][0][k], seen["init"][1][k]) for k in seen["init"][0])
    assert ma["label_counts"] == mb["label_counts"]
    assert ma["top1"] != mb["top1"] or ma["runs"][0]["final_loss_ema"] != mb["runs"][0]["final_loss_ema"]


def test_kd_runs_average_and_differ(tmp_path, teacher):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov)
    _, m = distill(tmp_path, tpath, [pool], "--kd-runs", "3")
    runs = [r["top1"] for r in m["runs"]]
    assert len(runs) == 3 and m["top1"] == pytest.approx(sum(runs) / 3) and m["top1_runs"] == runs
    inits = {r["student"]["init_seed"] for r in m["runs"]}
    assert len(inits) == 3  # each run its own initialisation
    _, one = distill(tmp_path, tpath, [pool], name="one.json")
    assert one["runs"][0]["top1"] == runs[0]  # run 0 of three is the single run


def test_precomputed_teacher_targets_equal_per_step_ones(tmp_path, teacher):
    """The table of teacher outputs for every (image, augmentation) holds the per-step forward's numbers."""
    from pri.core.vit import padded_index
    from pri.files.models import load_model
    from pri.tasks.distill import TeacherTargets, load_pools, select_images

    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov, ks=(3, 9, 16), per_k=4)
    t = load_model(MODEL, tpath)
    pools, info = load_pools([pool])
    args = type("A", (), {"classes": None, "images": None, "seed": 0})()
    syn = select_images(args, pools, info, 10)
    aug = Augment(8, 8, P, 0.0, True, "cpu", shift=1)
    table = TeacherTargets(t, syn, aug, steps=100, batch=8, device=torch.device("cpu"), amp=False, eval_batch=5)
    live = TeacherTargets(t, syn, aug, steps=1, batch=1, device=torch.device("cpu"), amp=False, eval_batch=5)
    assert table.precomputed and not live.precomputed
    b = torch.tensor([0, 5, 11, 3])
    combo = aug.draw(4, torch.Generator().manual_seed(3))
    x, m = aug.apply_each(syn.images[b], combo), aug.move_masks(syn.masks[b], combo)
    idx, valid = padded_index(m)
    assert torch.allclose(table(b, combo, x, idx, valid), live(b, combo, x, idx, valid), atol=1e-5)


def test_augment_moves_the_mask_with_the_pixels():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(8, N, dtype=torch.bool)
    for i in range(8):
        masks[i, torch.randperm(N, generator=g)[:5]] = True
    x = torch.randint(1, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=g)
    x = torch.where(pixel_mask(masks), x, torch.zeros_like(x))
    aug = Augment(8, 8, P, 0.0, True, "cpu", shift=1)  # the inversion engine's roll-and-flip
    combo = aug.draw(8, g)
    xa, ma = aug.apply_each(x, combo), aug.move_masks(masks, combo)
    assert (ma.sum(1) == 5).all()
    inside = pixel_mask(ma)
    assert (xa[~inside] == 0).all() and (xa[inside] > 0).all()
    assert sorted(xa.flatten().tolist()) == sorted(x.flatten().tolist())
    # each image is one roll by whole patches (at most 1 per axis), maybe flipped, and most moved
    moved = 0
    for i in range(8):
        cands = [torch.roll(x[i], (dy * P, dx * P), (-2, -1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        cands += [c.flip(-1) for c in cands]
        assert any(torch.equal(xa[i], c) for c in cands)
        moved += not torch.equal(xa[i], x[i])
    assert moved >= 4


def test_kd_loss():
    s = torch.randn(4, 10)
    assert float(kd_loss(s, s, 4.0)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(4, 10)
    T = 3.0
    pt = (t / T).softmax(-1)
    want = (pt * (pt.log() - (s / T).log_softmax(-1))).sum(-1).mean() * T * T
    assert float(kd_loss(s, t, T)) == pytest.approx(float(want), rel=1e-5)
