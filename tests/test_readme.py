"""The README is the front door: its commands are the ones CI runs, and it documents every config key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from stacks.config import StageConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def config_keys(cls=StageConfig, prefix: str = "") -> list[str]:
    keys = []
    for field in dataclasses.fields(cls):
        if field.name == "name":
            continue  # a stage's name is its key under `stages`
        if dataclasses.is_dataclass(field.type) or (isinstance(field.type, str) and field.type.endswith("Config")):
            section = field.default_factory()
            keys.extend(config_keys(type(section), f"{prefix}{field.name}."))
        else:
            keys.append(f"{prefix}{field.name}")
    return keys


def test_readme_documents_every_config_key():
    reference = README.split("## Configuration reference", 1)[1]
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", reference, flags=re.MULTILINE))
    keys = config_keys()
    assert len(keys) > 40
    missing = [key for key in keys if key not in documented]
    stale = sorted(documented - set(keys))
    assert not missing, f"README's config reference lacks: {missing}"
    assert not stale, f"README documents keys that do not exist: {stale}"


def test_readme_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("make synth", "make test"):
        assert command in README
        assert command in ci
