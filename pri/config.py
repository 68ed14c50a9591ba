"""Concise validation of a workflow config against its JSON schema: one line per error,
each naming the config key (dotted path) and what is wrong with it."""
from __future__ import annotations

import yaml


def config_errors(config: dict, schema_path: str) -> list[str]:
    import jsonschema

    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
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
