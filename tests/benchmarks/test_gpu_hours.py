"""benchmarks/gpu_hours.py prices a schedule from the measured H200 stages: where a schedule's
stages are exactly the measured ones, it gives back the measured loop time."""
import importlib.util
import json
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
MEASURED = ROOT / "benchmarks" / "results" / "h200"


def _gpu_hours():
    spec = importlib.util.spec_from_file_location("gpu_hours", ROOT / "benchmarks" / "gpu_hours.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("model", ["deit_tiny_patch16_224", "deit_base_patch16_224"])
@pytest.mark.parametrize("tag", ["dmi", "smi_default", "pri_v4", "pri_v7"])
def test_measured_schedules_are_priced_at_their_measured_loop_time(model, tag):
    gh = _gpu_hours()
    steps = gh.StepTimes(gh.stage_points(str(MEASURED), "paper_fp32_"))
    rows = json.loads((MEASURED / f"paper_fp32_{model}.json").read_text())["rows"]
    row = next(r for r in rows if r["tag"] == tag)
    got = gh.inversion_seconds(model, tag, 4000, 128, steps)
    # the measured loop also holds the score forwards, which gpu_hours leaves out (a few per cent)
    assert got == pytest.approx(row["time_loop_seconds"], rel=0.05)


def test_table_for_the_paper_config(capsys):
    gh = _gpu_hours()
    assert gh.main(["--config", str(ROOT / "config" / "paper.yaml"), "--measured", str(MEASURED)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in out.splitlines() if line.startswith("| ")}
    # inversion jobs (every tag of a sweep in one): 6 CIFAR teachers x 3 seeds x 23 batches, 3 ImageNet
    # teachers (quantisation only) x 3 seeds x 1 batch, and the two controls on one teacher x 3 seeds
    assert int(rows["invert (main)"][0]) == 6 * 3 * 23 + 3 * 3
    assert int(rows["invert (iso)"][0]) == int(rows["invert (oneclass)"][0]) == 3
    assert int(rows["teacher"][0]) == 9 and int(rows["distill (main)"][0]) == 6 * 3
    assert int(rows["quantize"][0]) == 3 * (3 + 1) and float(rows["quantize"][1]) > 0
    total = float(rows["total"][1])
    assert total == pytest.approx(sum(float(v[1]) for k, v in rows.items() if k not in ("total", "rule family")), abs=0.2)
