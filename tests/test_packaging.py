"""pyproject.toml and environment.yml name the same pins; the console script exists."""
import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_pins_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    assert py == conda
    assert py["torch"] == "torch==2.14.1" and py["torchvision"] == "torchvision==0.29.1"
    assert any(d.startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))


def test_installed_versions_match_the_pins():
    import importlib.metadata as md

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"]:
        if "==" in req:
            name, ver = req.split("==")
            assert md.version(_name(name)) == ver, req


def test_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["pri"] == "pri.cli:main"
