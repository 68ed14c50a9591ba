"""A workflow config checked against its JSON schema and filled with its documented defaults, in
one pass (``checked``; ``read`` for a file) used by the Snakefile, the tests and the benchmarks:
one line per error, each naming the config key (dotted path) and what is wrong with it.

Numbers are checked by pri.checks, as the commands' options are: NaN and infinities are refused
everywhere, an integer key takes no 50.0, and a range error reads as the option's would
(``must be a finite number > 0, got nan``). Strings where the schema wants a number, a boolean or
null (what Snakemake's ``--config 'inversion={iterations: 50}'`` yields: its parser reads values
inside braces as strings) are read as YAML first, in place."""
from __future__ import annotations

import copy
import os

import yaml

from pri.checks import range_error, schema_bounds
from pri.errors import PriError

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "..", "workflow", "schemas", "config.schema.yaml")

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _types(schema) -> list:
    t = schema.get("type", []) if isinstance(schema, dict) else []
    return [t] if isinstance(t, str) else list(t)


def _numeric(instance, schema) -> bool:
    return (isinstance(instance, (int, float)) and not isinstance(instance, bool)
            and bool({"integer", "number"} & set(_types(schema))))


def _validator_class():
    """Draft 2020-12 with its number checks replaced by pri.checks.range_error (one message per key)."""
    import jsonschema
    from jsonschema import ValidationError, validators

    base = jsonschema.Draft202012Validator

    def type_(validator, types, instance, schema):
        errors = list(base.VALIDATORS["type"](validator, types, instance, schema))
        if errors or not _numeric(instance, schema):
            yield from errors
            return
        why = range_error(instance, "number" not in _types(schema), **schema_bounds(schema))
        if why:
            yield ValidationError(why)

    def bound(keyword):
        def check(validator, value, instance, schema):
            if not _numeric(instance, schema):  # numbers: checked with their type above
                yield from base.VALIDATORS[keyword](validator, value, instance, schema)
        return check

    return validators.extend(base, {"type": type_, **{k: bound(k) for k in _BOUNDS}})


def _read_strings(node, schema) -> object:
    """``node`` with each string that the schema wants as a number, boolean or null read as YAML."""
    if not isinstance(schema, dict):
        return node
    if isinstance(node, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for k, v in node.items():
            node[k] = _read_strings(v, props.get(k, extra))
    elif isinstance(node, list):
        node[:] = [_read_strings(v, schema.get("items")) for v in node]
    elif isinstance(node, str) and node in ("null", "~") and "null" in _types(schema):
        return None
    elif isinstance(node, str) and "string" not in _types(schema) and set(_types(schema)) & set(_TYPES):
        try:
            value = yaml.safe_load(node)
        except yaml.YAMLError:
            return node
        wanted = tuple(_TYPES[t] for t in _types(schema) if t in _TYPES)
        if isinstance(value, wanted) and (value is not True and value is not False or bool in wanted):
            return value
    return node


def config_errors(config: dict, schema_path: str) -> list[str]:
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    _read_strings(config, schema)
    validator = _validator_class()(schema)
    out = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "none"
            for k in extra:
                name = f"{key}.{k}" if key != "(top level)" else k
                out.append(f"config key {name}: unknown key (allowed here: {allowed})")
            continue
        desc = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
        hint = f" - {desc.strip().splitlines()[0]}" if desc else ""
        out.append(f"config key {key}: {err.message}{hint}")
    return out


class ConfigError(PriError):
    """A config that breaks its schema: every problem, one line each, naming its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("config", "invalid configuration, nothing was run:\n  " + "\n  ".join(problems))


def checked(config: dict, schema_path: str = SCHEMA) -> dict:
    """``config`` checked (ConfigError listing every problem) and, in place, filled with the
    schema's defaults wherever a key is absent (as Snakemake's ``validate`` fills them); returned."""
    problems = config_errors(config, schema_path)
    if problems:
        raise ConfigError(problems)
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    from jsonschema import validators

    base = _validator_class()
    properties = base.VALIDATORS["properties"]

    def with_defaults(validator, props, instance, schema):
        for key, sub in props.items():
            if isinstance(instance, dict) and isinstance(sub, dict) and "default" in sub:
                instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, schema)

    validators.extend(base, {"properties": with_defaults})(schema).validate(config)
    return config


def read(path: str, schema_path: str = SCHEMA) -> dict:
    """A config file, checked and filled with its defaults."""
    with open(path) as f:
        return checked(yaml.safe_load(f) or {}, schema_path)
