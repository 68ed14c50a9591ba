"""One source of defaults: every workflow key with a default agrees with the option of the same
name of the command it is passed to (the rules pass config keys as --options of the same name)."""
import argparse
from pathlib import Path

import pytest
import yaml

from pri.cli import build_parser
from pri.workflow.jobs import DISTILL_KEYS, TRAIN_KEYS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())

# schema section -> (command, keys that are the workflow's own and reach no option of that name)
SECTIONS = {
    "inversion": ("invert", {"images", "batches", "seeds", "methods", "iterations"}),
    "distill": ("distill", {"images", "student_checkpoint", "scratch_seeds"}),
    "efficiency": ("efficiency", {"enabled", "models", "img_size", "time_batch", "time_tags", "tags", "time_models"}),
}


def _options(command: str) -> dict:
    sub = build_parser(command)._subparsers._group_actions[0].choices[command]
    return {a.dest: a for a in sub._actions if not isinstance(a, argparse._HelpAction)}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_defaults_equal_the_commands_defaults(section):
    command, own = SECTIONS[section]
    opts = _options(command)
    props = SCHEMA["properties"][section]["properties"]
    checked = 0
    for key, spec in props.items():
        if "default" not in spec or key in own:
            continue
        assert key in opts, f"{section}.{key} has a default but `pri {command}` has no --{key.replace('_', '-')}"
        want = opts[key].default if not isinstance(opts[key], argparse._StoreTrueAction) else False
        assert spec["default"] == want, f"{section}.{key}: schema {spec['default']!r}, pri {command} {want!r}"
        checked += 1
    assert checked >= 3


def test_every_key_the_rules_pass_is_an_option():
    for command, keys in (("distill", DISTILL_KEYS), ("teacher", TRAIN_KEYS)):
        opts = _options(command)
        assert not [k for k in keys if k not in opts], command
    train = SCHEMA["properties"]["teachers"]["additionalProperties"]["properties"]["train"]["properties"]
    assert set(train) == set(TRAIN_KEYS)
    distill = SCHEMA["properties"]["distill"]["properties"]
    assert set(DISTILL_KEYS) <= set(distill)
