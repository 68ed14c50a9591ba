"""A workflow config's values are checked before any job, each error one line naming its config
key: NaN, infinities and out-of-range numbers (the schema, with pri.checks, as the commands'
options are), keys that must agree with each other (the plan), values that would become options of
a command or split ``pri batch``'s command list, and the strings Snakemake's ``--config`` yields
(README: "What bad input gets")."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helper import config_dict

from pri.cli import build_parser
from pri.errors import PriError
from pri.workflow.config import config_errors
from pri.workflow.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
NAN, INF = float("nan"), float("inf")


def planned(**changes) -> Plan:
    """The plan of config/test.yaml with dotted keys changed, the schema's defaults filled in."""
    from pri.workflow.config import checked

    return Plan(checked(config_dict("test.yaml", **changes), SCHEMA))


@pytest.mark.parametrize("change,key,needle", [
    ({"inversion.tv_weight": NAN}, "inversion.tv_weight", "must be a finite number >= 0, got nan"),
    ({"claims.level": NAN}, "claims.level", "must be a finite number in (0, 1), got nan"),
    ({"claims.level": 1.0}, "claims.level", "must be a finite number in (0, 1), got 1.0"),
    ({"distill.lr": NAN}, "distill.lr", "must be a finite number > 0, got nan"),
    ({"distill.lr": INF}, "distill.lr", "must be a finite number > 0, got inf"),
    ({"distill.lr": -1}, "distill.lr", "must be a finite number > 0, got -1"),
    ({"teachers.digits.train": {"lr": NAN}}, "teachers.digits.train.lr", "must be a finite number > 0, got nan"),
    ({"teachers.digits.train": {"warmup": INF}}, "teachers.digits.train.warmup", "got inf"),
    ({"claims.delta_top1": NAN}, "claims.delta_top1", "must be a finite number >= 0, got nan"),
    ({"claims.delta_top1": INF}, "claims.delta_top1", "must be a finite number >= 0, got inf"),
    ({"inversion.iterations": 50.0}, "inversion.iterations", "must be an integer >= 1, got 50.0"),
    ({"inversion.seeds": [0, 2**64]}, "inversion.seeds.1", "must be an integer in [0, 2^63 - 1]"),
    ({"teachers.digits.train": {"seed": 2**64}}, "teachers.digits.train.seed", "in [0, 2^63 - 1]"),
    ({"run": ".."}, "run", "'..' does not match"),
    ({"run": "."}, "run", "'.' does not match"),
    ({"run": "a/b"}, "run", "'a/b' does not match"),
    ({"run": "-x"}, "run", "'-x' does not match"),
])
def test_a_bad_number_or_run_name_is_one_line_naming_the_key(change, key, needle):
    errors = config_errors(config_dict("test.yaml", **change), SCHEMA)
    assert len(errors) == 1 and errors[0].startswith(f"config key {key}: ") and needle in errors[0], errors


@pytest.mark.parametrize("change,key,needle", [
    ({"teachers.digits.img_size": 9}, "teachers.digits.img_size", "give a multiple of 2 (got 9)"),
    ({"teachers.digits.model": "resnet18"}, "teachers.digits.model", "ResNet is not a timm VisionTransformer"),
    ({"teachers.digits.num_classes": 5}, "teachers.digits.num_classes", "digits has 10 classes, not 5"),
    ({"quantize.w_bits": [8, 8], "quantize.a_bits": [8, 8]}, "quantize.w_bits", "W8A8 given twice"),
    ({"quantize.w_bits": [8], "quantize.a_bits": [8, 8]}, "quantize.w_bits", "W8A8 given twice"),
    ({"distill.student": "vit_pico_patch4_28"}, "distill.student", "into 4 patches of 4 px"),
    ({"teachers.digits.student": "vit_pico_patch4_28"}, "teachers.digits.student", "into 16 of 2 px"),
    ({"distill.student": "resnet18"}, "distill.student", "ResNet is not a timm VisionTransformer"),
    ({"efficiency.img_size": 30}, "efficiency.img_size", "give a multiple of 4 (got 30)"),
    ({"efficiency.models": ["resnet18"]}, "efficiency.models.0", "ResNet is not a timm VisionTransformer"),
    ({"efficiency.tags": ["pri_v100"]}, "efficiency.tags", "division factor must lie in [1, 49]"),
    ({"inversion.images": 10**12}, "inversion.images", "cannot fit in this machine's memory"),
    ({"efficiency.batch": 10**12}, "efficiency.batch", "cannot fit in this machine's memory"),
    ({"controls.iso_compute.budgets": [1e300]}, "controls.iso_compute.budgets.0", "1e+300 images cannot fit"),
    ({"distill.batch": 10**12}, "distill.batch", "1000000000000 images cannot fit in this machine's memory"),
    ({"distill.images": 10**12}, "distill.images", "cannot fit in this machine's memory"),
    ({"quantize.calib_images": 10**12}, "quantize.calib_images", "cannot fit in this machine's memory"),
    ({"efficiency.batch": 10**12, "efficiency.time_batch": 7}, "efficiency.batch", "cannot fit"),
    ({"efficiency.time_batch": 10**12}, "efficiency.time_batch", "cannot fit in this machine's memory"),
    ({"inversion.iterations": 10**12}, "inversion.iterations", "1000000000000 iterations cannot be counted"),
    ({"inversion.iterations": 2**31}, "inversion.iterations", "int32 (at most 2^31 - 1)"),
    ({"efficiency.iterations": 10**12}, "efficiency.iterations", "iterations cannot be counted"),
    ({"distill.images": 80}, "distill.images", "raise inversion.images to 80 or more"),  # found by bisection
])
def test_keys_that_disagree_are_found_when_planning(change, key, needle):
    with pytest.raises(PriError) as e:
        planned(**change)
    assert e.value.option == key and needle in e.value.message, e.value
    assert "--" not in e.value.message, e.value  # config keys, not a command's options


def test_a_student_with_the_teachers_grid_and_a_quantise_only_teacher_pass():
    assert planned(**{"distill.student": "vit_pico_patch2_8"}).active == ["digits"]
    plan = planned(**{"teachers.digits.tasks": ["quantize"], "teachers.digits.classes": [0, 1],
                      "distill.student": "vit_pico_patch4_28", "quantize.calib_images": 4})
    assert plan.tasks["digits"] == ["quantize"]  # no student: its grid does not matter


def _parts(argv: list[str]) -> list[list[str]]:
    """``pri batch``'s command list as pri.cli.batch splits it."""
    from pri.cli import split_batch

    return split_batch(argv)


@pytest.mark.parametrize("value", ["--epochs=0.001", "::", "-x", "a b;touch x"])
def test_a_path_value_stays_one_argument_of_its_option(value):
    """A data root (or checkpoint) reaches each command as the value of its own option: it becomes
    no option of the command (``--epochs=0.001``) and does not split pri batch's list (``::``)."""
    plan = planned(**{"teachers.digits.data_root": value})
    argv = plan.teacher_args("digits") + ["--out", "t.pt"]
    args = build_parser("teacher").parse_args(["teacher", *argv])
    assert args.data_root == value and args.epochs == 8
    tags = plan.sweep("digits", "main").tags
    for job, n in ((plan.distill_job("digits", "main", 0, value, 1), len(tags)),
                   (plan.quantize_job("digits", 0, value, 1), len(plan.quant_tags("digits"))),
                   (plan.quantize_baseline_job("digits", value, 1), 2),
                   (plan.invert_job("digits", "main", 0, 0, value, 1), len(tags))):
        parts = _parts(job)
        assert len(parts) == n, parts
        for p in parts:
            a = build_parser(p[0]).parse_args(p)
            assert (a.checkpoint if p[0] == "invert" else a.teacher) == value
            assert getattr(a, "data_root", value) == value


def test_snakemakes_config_strings_are_read_as_the_schema_types():
    """``--config 'inversion={iterations: 50}'``: Snakemake's parser leaves the values inside braces
    as strings; they are read as YAML where the schema wants a number, boolean or null."""
    from snakemake.cli import parse_config

    cfg = config_dict("test.yaml")
    cfg.update(parse_config(["inversion={iterations: 50, lr: 0.5, rerank_every: null, seeds: [0, 3]}",
                             "distill={augment: true, scratch_seeds: ~}", "threads=2"]))
    assert config_errors(cfg, SCHEMA) == []
    assert cfg["inversion"] == {"iterations": 50, "lr": 0.5, "rerank_every": None, "seeds": [0, 3]}
    assert cfg["distill"] == {"augment": True, "scratch_seeds": None} and cfg["threads"] == 2
    bad = config_dict("test.yaml")
    bad.update(parse_config(["claims={level: .nan}", "distill={lr: fast}"]))
    assert config_errors(bad, SCHEMA) == [
        "config key claims.level: must be a finite number in (0, 1), got nan - Confidence level of every interval.",
        "config key distill.lr: 'fast' is not of type 'number' - Peak KD learning rate."]


@pytest.mark.parametrize("entry,needle", [("inversion={iterations: 50}", None),
                                         ("claims={level: .nan}", "config key claims.level: must be a finite number")])
def test_snakemakes_config_option_in_braces(entry, needle, tmp_path):
    """The dry run takes ``--config 'inversion={iterations: 50}'`` (merged into the config file's
    section), and refuses ``claims={level: .nan}`` in one line naming the key."""
    r = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n", "--quiet",
                        "rules", "--configfile", str(ROOT / "config" / "test.yaml"), "--config", entry],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    if needle is None:
        assert r.returncode == 0, out[-3000:]
    else:
        assert r.returncode != 0 and len([ln for ln in out.splitlines() if needle in ln]) == 1, out[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("option,value,needle", [("--missing", "{x", "--missing: not JSON"),
                                                 ("--claims-config", "[1]", "--claims-config: give a JSON object"),
                                                 ("--data", "", "--data: not JSON")])
def test_analysis_options_that_are_not_json_are_one_line(option, value, needle, tmp_path, capsys):
    from analysis.__main__ import main

    out = tmp_path / "analysis"
    assert main(["--out", str(out), option, value]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("python -m analysis: error: ") and needle in lines[0], lines
    assert not os.path.exists(out)


@pytest.mark.parametrize("name", ["config.yaml", "fmnist-long.yaml", "paper.yaml", "test.yaml"])
def test_checked_fills_the_defaults_snakemake_would(name):
    """One pass (pri.workflow.config.checked) checks and fills in the schema's defaults for the
    Snakefile, the tests and the benchmarks: the same config Snakemake's own validate gives."""
    from snakemake.utils import validate

    from pri.workflow.config import checked

    ours, theirs = config_dict(name), config_dict(name)
    validate(theirs, SCHEMA)
    assert checked(ours, SCHEMA) == theirs
    assert ours["claims"]["level"] == 0.95 and "delta_top1" in ours["claims"]  # a default was filled


def test_checked_refuses_a_bad_config_naming_every_key():
    from pri.workflow.config import ConfigError, checked

    with pytest.raises(ConfigError) as e:
        checked(config_dict("test.yaml", **{"inversion.iterations": 0, "distill.lr": float("nan")}), SCHEMA)
    assert [p.split(":")[0] for p in e.value.problems] == ["config key distill.lr", "config key inversion.iterations"]
    assert e.value.message.startswith("invalid configuration, nothing was run")
