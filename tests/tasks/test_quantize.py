"""pri quantize: the quantisers on known tensors, 16-bit fidelity, a trained teacher at W8A8 (pool vs noise),
sparse calibration reading only the kept patches, bad input, determinism and draws."""
from __future__ import annotations

import json
import os

import pytest
import torch
from cli_helper import main

from pri.files.models import build_model, save_checkpoint, sha256_file
from pri.tasks import fakequant as Q  # the quantisers and the fake-quantised forward

DIGITS = "vit_pico_patch2_8"  # 8 px, 4x4 = 16 patches of 2 px: fast CLI runs on scikit-learn's digits
FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every quantiser test runs on one torch thread (conftest.one_thread)."""
    yield


# ---------------------------------------------------------------------------------------------
# 1-2: the quantisers

def test_weight_quantiser_per_channel_scales_values_and_clipping():
    # scales are exact in binary: absmax / ((2^4 - 1) / 2) = 7.5 / 7.5, 3.75 / 7.5, 0.9375 / 7.5
    w = torch.tensor([[-7.5, 3.2, 7.5, 0.6],
                      [3.75, -3.75, 1.2, -0.3],
                      [-0.9375, -0.1, -0.5, -0.3]])
    dq, scale = Q.quantize_weight(w, 4)
    assert scale.tolist() == [1.0, 0.5, 0.125]
    # w / scale = [-7.5, 3.2, 7.5, 0.6], [7.5, -7.5, 2.4, -0.6], [-7.5, -0.8, -4, -2.4]; round half to even, then
    # clamp to [-8, 7]: +7.5 -> 8 clips to 7 = 2^(b-1) - 1, -7.5 -> -8 = -2^(b-1) is kept
    q = [[-8, 3, 7, 1], [7, -8, 2, -1], [-8, -1, -4, -2]]
    assert torch.equal(dq, torch.tensor(q, dtype=torch.float32) * scale[:, None])
    # 8 bits on a conv weight: per output channel, integers in [-128, 127], error <= scale / 2 except the clipped max
    torch.manual_seed(0)
    w = torch.randn(6, 3, 2, 2) * torch.arange(1, 7).view(6, 1, 1, 1)
    dq, scale = Q.quantize_weight(w, 8)
    flat, dflat = w.reshape(6, -1), dq.reshape(6, -1)
    assert torch.allclose(scale, flat.abs().amax(1) / 127.5)
    ints = dflat / scale[:, None]
    assert torch.allclose(ints, ints.round(), atol=1e-4) and ints.min() >= -128 - 1e-4 and ints.max() <= 127 + 1e-4
    assert ((dflat - flat).abs() <= scale[:, None] / 2 + 1e-6).all()


def test_activation_quantiser_zero_point_scale_and_range():
    # straddling zero: scale = 7.5 / 15 = 0.5, zp = -round(-1.5 / 0.5) = 3, grid [-1.5, 6.0]
    assert Q.act_qparams(-1.5, 6.0, 4) == (0.5, 3)
    x = torch.tensor([-2.0, -1.5, -0.26, 0.0, 0.74, 6.0, 7.0])
    assert Q.fake_quant(x, 0.5, 3, 4).tolist() == [-1.5, -1.5, -0.5, 0.0, 0.5, 6.0, 6.0]
    # all positive: zp = clamp(-round(1 / 0.25), 0, 15) = 0, so the grid is [0, max - min] = [0, 3.75] (PSAQ's
    # observer does not widen the range to hold 0): the maximum itself is clipped
    assert Q.act_qparams(1.0, 4.75, 4) == (0.25, 0)
    assert Q.fake_quant(torch.tensor([1.0, 2.0, 3.75, 4.75]), 0.25, 0, 4).tolist() == [1.0, 2.0, 3.75, 3.75]
    # all negative: zp = clamp(19, 0, 15) = 15, grid [-3.75, 0]: the minimum is clipped
    assert Q.act_qparams(-4.75, -1.0, 4) == (0.25, 15)
    assert Q.fake_quant(torch.tensor([-4.75, -2.0, -1.0]), 0.25, 15, 4).tolist() == [-3.75, -2.0, -1.0]
    # the fast form equals the protocol's formula (clamp(round(x / s) + zp, 0, 2^b - 1) - zp) * s, in place too
    torch.manual_seed(0)
    x = torch.randn(10000) * 3
    s, zp = Q.act_qparams(-2.0, 2.5, 8)
    ref = (torch.clamp(torch.round(x / s) + zp, 0, 255) - zp) * s
    assert torch.equal(Q.fake_quant(x, s, zp, 8), ref)
    assert torch.equal(Q.fake_quant(x.clone(), s, zp, 8, inplace=True), ref)
    assert (ref.unique().numel() <= 256) and ref.min() >= -zp * s and ref.max() <= (255 - zp) * s
    # the observer keeps the running min and max over calls; ActQuant applies them per site
    obs = Q.Observer()
    obs("a", torch.tensor([0.5, 1.0]))
    obs("a", torch.tensor([-1.5, 0.0]))
    obs("a", torch.tensor([6.0]))
    assert obs.ranges == {"a": [-1.5, 6.0]}
    assert Q.ActQuant(obs.ranges, 4)("a", x[:5].clone()).tolist() == Q.fake_quant(x[:5], 0.5, 3, 4).tolist()


# ---------------------------------------------------------------------------------------------
# 3: sixteen bits everywhere is the float model

@pytest.mark.parametrize("name", ["vit_pico_patch4_28", "deit_tiny_patch16_224"])
def test_16_bits_match_float(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    # timm initialises the class token at std 1e-6; at random init the last LayerNorm of that near-constant token
    # then amplifies every rounding about 50x. A trained class token is O(1): give it that scale.
    torch.nn.init.normal_(model.cls_token, std=1.0)
    s, c = int(model.patch_embed.img_size[0]), int(model.patch_embed.proj.in_channels)
    x = torch.randn(4, c, s, s)
    with torch.no_grad():
        ref = model(x)
        scale = float(ref.abs().max())
        # the explicit block forward with float weights and no quantiser is timm's forward
        fp = Q.forward(model, Q.layer_weights(model, None), Q.no_quant, x)
        assert float((fp - ref).abs().max()) <= 1e-5 * scale
        ranges = Q.calibrate(model, x)
        assert list(ranges) == Q.activation_sites(model)  # every site observed, in forward order
        assert len(ranges) == 7 + 10 * len(model.blocks)
        err16 = float((Q.QuantViT(model, ranges, 16, 16)(x) - ref).abs().max()) / scale
        err8 = float((Q.QuantViT(model, ranges, 8, 8)(x) - ref).abs().max()) / scale
    # tolerance: max |logit difference| <= 1e-3 of the largest |logit| at W16A16 (measured 0.8e-4 on
    # vit_pico_patch4_28, 1.5e-4 on deit_tiny); W8A8 is far outside it (measured 0.029 and 0.036)
    assert err16 <= 1e-3, err16
    assert err8 > 1e-2, err8


# ---------------------------------------------------------------------------------------------
# 4: a trained default-sized teacher at W8A8

@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """vit_pico_patch4_28 trained 0.3 epochs on Fashion-MNIST (about 68% top-1) and a PRI v=4 pool inverted from it."""
    if not all(os.path.exists(os.path.join(FMNIST_ROOT, f)) for f in
               ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz")):
        pytest.skip(f"Fashion-MNIST is not installed at {FMNIST_ROOT} (apt-get install dataset-fashion-mnist)")
    d = tmp_path_factory.mktemp("fmnist")
    teacher, pool = str(d / "teacher.pt"), str(d / "pool.pt")
    assert main(["teacher", "--epochs", "0.3", "--warmup", "0.05", "--limit-test", "2000", "--threads", "1",
                 "--no-progress", "--out", teacher]) == 0
    assert main(["invert", "--model", "vit_pico_patch4_28", "--checkpoint", teacher, "--method", "pri", "--v", "4",
                 "--iterations", "40", "--batch", "40", "--threads", "1", "--no-progress", "--device", "cpu",
                 "--out", pool]) == 0
    return teacher, pool, d


def quantize(out, *args):
    rc = main(["quantize", *args, "--threads", "1", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert rc == 0
    with open(out) as f:
        return json.load(f)


@pytest.mark.slow  # trains a Fashion-MNIST teacher and a pool (40 s): pytest --all and CI run it
def test_w8a8_on_a_trained_teacher_pool_loses_little_noise_more(fmnist):
    teacher, pool, d = fmnist
    common = ["--teacher", teacher, "--limit-test", "2000", "--w-bits", "8", "--a-bits", "8"]
    pm = quantize(d / "pool.json", *common, "--pool", pool)
    nm = quantize(d / "noise.json", *common, "--calibration", "noise", "--draws", "2")
    rm = quantize(d / "real.json", *common, "--calibration", "real", "--balance-unit", "4")  # the pool's histogram
    fp = pm["fp_top1"]
    assert fp > 0.55 and nm["fp_top1"] == fp == rm["fp_top1"]
    drop = {k: fp - sum(r["top1"] for r in m["rows"]) / len(m["rows"]) for k, m in
            (("pool", pm), ("noise", nm), ("real", rm))}
    # measured (2000 test images, FP 67.6%): pool 1.85 points, real 1.25, noise 3.75 and 4.60 (mean 4.2).
    # On this small model noise loses about twice what the pool loses, not the collapse seen on ImageNet DeiTs;
    # the thresholds keep at least 0.7 points of margin to the measurement.
    assert drop["pool"] <= 0.03 and drop["real"] <= 0.03, drop
    assert drop["noise"] >= 0.03 and drop["noise"] >= drop["pool"] + 0.01, drop
    assert pm["rows"][0]["calibration"]["tokens_fed"] == sum(k + 1 for k in pm["rows"][0]["calibration"]["mask_sizes"])
    # 32 images dealt in whole v = 4 trajectories: 8 classes of 4, as the real calibration's histogram
    assert sorted(pm["rows"][0]["calibration"]["class_histogram"].values()) == [4] * 8
    assert rm["rows"][0]["calibration"]["class_histogram"] == pm["rows"][0]["calibration"]["class_histogram"]


# ---------------------------------------------------------------------------------------------
# 5-7 on a random digits teacher (fast; scikit-learn ships the data)

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    model = build_model(DIGITS, num_classes=10)
    torch.nn.init.normal_(model.cls_token, std=1.0)
    path = str(d / "teacher.pt")
    save_checkpoint(path, model, DIGITS, (0.3,), (0.4,), {"recipe": {"dataset": "digits"}})
    return path, sha256_file(path), d


def make_pool(path, teacher_sha, ks=(4, 5, 8), per_k=8, garbage=False, ledger=True, classes=10):
    """A pool in pri invert's format: dim kept pixels (0..127), exactly 0 outside the mask, or with ``garbage``
    bright pixels (200..255) outside it."""
    g = torch.Generator().manual_seed(0)
    masks = []
    for k in ks:
        for _ in range(per_k):
            m = torch.zeros(16, dtype=torch.bool)
            m[torch.randperm(16, generator=g)[:k]] = True
            masks.append(m)
    masks = torch.stack(masks)
    inside = masks.view(-1, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    images = torch.randint(0, 128, (len(masks), 1, 8, 8), generator=g, dtype=torch.uint8)
    outside = torch.randint(200, 256, images.shape, generator=g, dtype=torch.uint8) if garbage else 0
    images = torch.where(inside, images, outside).to(torch.uint8)
    pool = {"images": images, "masks": masks, "labels": torch.arange(len(masks)) % classes,
            "trajectory": torch.arange(len(masks)), "stage": torch.zeros(len(masks), dtype=torch.int64)}
    if ledger:
        pool["ledger"] = {"method": "pri", "v": 4, "seed": 0, "teacher": {"model": DIGITS, "sha256": teacher_sha}}
    torch.save(pool, path)
    return str(path)


def test_sparse_calibration_reads_only_the_kept_patches(digits):
    teacher, sha, d = digits
    clean = make_pool(d / "clean.pt", sha, classes=8)  # 3 images of each of classes 0..7: all 24 calibrate
    dirty = make_pool(d / "dirty.pt", sha, garbage=True, classes=8)
    args = ["--teacher", teacher, "--calib-images", "24", "--w-bits", "8", "4", "--a-bits", "8", "--classes",
            *map(str, range(8))]
    m = {(p, mode): quantize(d / f"{p}_{mode}.json", *args, "--pool", path, "--pre-gather", mode)
         for p, path in (("clean", clean), ("dirty", dirty)) for mode in ("sparse", "dense")}
    cal = m["clean", "sparse"]["calibrations"][0]
    assert cal["groups"] == {"4": 8, "5": 8, "8": 8} and cal["tokens_fed"] == 8 * (5 + 6 + 9)
    # sparse: the garbage is never read
    assert m["dirty", "sparse"]["calibrations"][0]["ranges"] == cal["ranges"]
    assert [r["top1"] for r in m["dirty", "sparse"]["rows"]] == [r["top1"] for r in m["clean", "sparse"]["rows"]]
    # dense (SMI's code): the input and patch-embedding quantisers see it
    dense_clean, dense_dirty = (m[p, "dense"]["calibrations"][0]["ranges"] for p in ("clean", "dirty"))
    assert dense_dirty["input"][1] > dense_clean["input"][1]
    assert dense_dirty["patch_embed"] != dense_clean["patch_embed"]
    assert m["dirty", "dense"]["pre_gather"] == "dense"


def bad_cases(teacher, sha, d):
    good = make_pool(d / "good.pt", sha)  # 24 images
    other = make_pool(d / "other.pt", "0" * 64)
    bare = make_pool(d / "bare.pt", sha, ledger=False)
    os.makedirs(d / "adir", exist_ok=True)
    base = ["--teacher", teacher]
    return [
        (base + ["--pool", good, "--w-bits", "1"], "--w-bits", "m.json"),
        (base + ["--pool", good, "--a-bits", "8", "17"], "--a-bits", "m.json"),
        (base + ["--pool", good, "--w-bits", "8", "4", "--a-bits", "8", "6", "4"], "--a-bits", "m.json"),
        (base, "--pool", "m.json"),
        (base + ["--pool", other], "--teacher", "m.json"),
        (base + ["--pool", bare], "--teacher", "m.json"),
        (base + ["--pool", good, "--calib-images", "25"], "--calib-images", "m.json"),
        (base + ["--pool", good, "--draws", "0"], "--draws", "m.json"),
        (base + ["--pool", good], "--out", "adir"),
        (base + ["--pool", good], "--out", "/proc/pri-quantize-test/m.json"),
    ]


def test_bad_input_one_line_naming_the_option(digits, capsys):
    teacher, sha, d = digits
    for args, option, out in bad_cases(teacher, sha, d):
        out = out if out.startswith("/") else str(d / out)
        before = set(os.listdir(d / "adir"))
        rc = main(["quantize", *args, "--threads", "1", "--no-progress", "--out", out])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, (args, err)
        assert lines[0].startswith(f"pri quantize: error: {option}: "), (args, err)
        assert not os.path.isfile(out) and set(os.listdir(d / "adir")) == before, args


def test_same_seed_same_numbers_and_draws_use_other_images(digits):
    teacher, sha, d = digits
    pool = make_pool(d / "det.pt", sha)
    args = ["--teacher", teacher, "--pool", pool, "--calib-images", "8", "--draws", "2", "--w-bits", "8", "4",
            "--a-bits", "8"]
    a = quantize(d / "a.json", *args)
    b = quantize(d / "b.json", *args)
    assert "timing" not in a and a == b  # seconds go to the timing side file: the same bytes
    assert (d / "a.json").read_bytes() == (d / "b.json").read_bytes()
    assert json.loads((d / "a.json.timing.json").read_text())["wall_seconds"] > 0
    assert [(r["setting"], r["draw"]) for r in a["rows"]] == [("W8A8", 0), ("W4A8", 0), ("W8A8", 1), ("W4A8", 1)]
    c0, c1 = (c["indices"] for c in a["calibrations"])
    assert c0 != c1 and len(c0) == len(set(map(tuple, c0))) == 8
    assert a["calibrations"][0]["ranges"] != a["calibrations"][1]["ranges"]
    assert a["rows"][0]["calibration"]["pools"][0]["sha256"] == sha256_file(pool)
    other_seed = quantize(d / "c.json", *args, "--seed", "1")
    assert other_seed["calibrations"][0]["indices"] not in (c0, c1)
    # noise and real training images: other draws, other images; the same draw, the same images
    real = quantize(d / "real.json", "--teacher", teacher, "--calibration", "real", "--calib-images", "8",
                    "--draws", "2")
    r0, r1 = (c["indices"] for c in real["calibrations"])
    assert r0 != r1 and real["calibrations"][0]["split"] == "train"
    noise = quantize(d / "noise.json", "--teacher", teacher, "--calibration", "noise", "--draws", "2")
    assert noise["calibrations"][0]["ranges"]["input"] != noise["calibrations"][1]["ranges"]["input"]
    # the validation split (held out of train) scores instead of test when asked: for choosing a setting
    from pri.files.data import load_dataset

    val = quantize(d / "val.json", "--teacher", teacher, "--calibration", "noise", "--split", "val")
    assert val["test"]["split"] == "val" and a["test"]["split"] == "test"
    assert val["test"]["num_images"] == len(load_dataset("digits", None, "val")[1]) != a["test"]["num_images"]
    # every row records which test images it got right: their mean is its top-1, the same images for all
    from analysis.collect import correct_of

    for row in a["rows"] + real["rows"] + noise["rows"]:
        c = correct_of(row)
        assert c is not None and len(c) == row["num_images"] == a["test"]["num_images"]
        assert c.mean() == pytest.approx(row["top1"])


def test_unsupported_vits_are_refused_by_name():
    from timm.models.vision_transformer import VisionTransformer

    small = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    Q.check_supported(VisionTransformer(**small))
    for kw, what in ((dict(reg_tokens=2), "register tokens"), (dict(no_embed_class=True), "no_embed_class"),
                     (dict(init_values=1e-5), "LayerScale"), (dict(global_pool="avg"), "global_pool"),
                     (dict(pre_norm=True), "norm_pre"), (dict(num_classes=0), "num_classes=0")):
        with pytest.raises(ValueError, match=what):
            Q.check_supported(VisionTransformer(**{**small, **kw}))


def test_the_quantiser_refuses_what_it_cannot_run_with_the_right_reason():
    """A distilled DeiT is inverted exactly, but the quantiser's forward has a CLS-only prefix: it
    says so (not "register tokens"); families the inverter refuses are refused for the same reason."""
    import timm

    deit = timm.create_model("deit_tiny_distilled_patch16_224", img_size=32, depth=1, num_classes=3)
    with pytest.raises(ValueError, match="distillation token") as e:
        Q.check_supported(deit)
    assert "register" not in str(e.value)
    eva = timm.create_model("eva02_tiny_patch14_224", img_size=28, depth=1, num_classes=3)
    with pytest.raises(ValueError, match="rotary"):
        Q.check_supported(eva)
