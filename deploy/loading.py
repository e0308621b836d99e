"""Load YAML run configs and judge manifests into `protocols` models, with errors that name the
file, the judge and the field, and apply CLI overrides (`--set learner.lr=1e-5`).

Errors are raised as `ConfigError` whose message is one line, ready for the driver to print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from protocols import JudgeManifest, RunConfig
from protocols.judges import JUDGE_KINDS  # the union tags, as they appear in error locations


class ConfigError(ValueError):
    """A config or manifest problem, described in one line."""


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where} is not valid YAML: {problem}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _field_name(loc: list) -> str:
    """['members', 1, 'function'] -> 'members[1].function'."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def describe_errors(err: ValidationError, data: dict[str, Any], source: str) -> str:
    """'source: judges[0] (name 'rm'): field 'path': Field required' for the first error(s)."""
    errors = err.errors()
    # A tuple whose items failed also reports "should have at least 1 item": noise next to the cause.
    specific = [e for e in errors if e["type"] != "too_short"] or errors
    parts = []
    for e in specific[:3]:
        loc = list(e["loc"])
        label = ""
        if len(loc) >= 2 and loc[0] == "judges" and isinstance(loc[1], int):
            judges = data.get("judges") or []
            name = judges[loc[1]].get("name") if loc[1] < len(judges) and isinstance(judges[loc[1]], dict) else None
            label = f"judges[{loc[1]}]" + (f" (name {name!r})" if name else "") + ": "
            loc = loc[2:]
        loc = [x for x in loc if x not in JUDGE_KINDS]  # drop the discriminated-union tag
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = [*loc, "kind"]
        field = _field_name(loc) or "(top level)"
        secret = bool(loc) and loc[-1] == "api_key_env"  # may hold a key pasted by mistake: never echo it
        value = f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) and not secret else ""
        parts.append(f"{label}field '{field}': {e['msg']}{value}")
    return f"{source}: " + "; ".join(parts)


def load_manifest(path: str | Path) -> JudgeManifest:
    data = read_yaml(path, "judge manifest")
    try:
        return JudgeManifest.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_errors(err, data, str(path))) from err


def parse_override(text: str) -> tuple[list[str], Any]:
    """'learner.lr=1e-5' -> (['learner', 'lr'], 1e-5); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. learner.lr=1e-5")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:  # not a ValueError: would escape the driver's one-line error
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"--set {text!r}: value {raw!r} is not valid YAML: {problem}") from err
    return key.split("."), value


def merge(base: dict[str, Any], keys: list[str], value: Any) -> None:
    node = base
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {key!r} is not a section")
    node[keys[-1]] = value


def build_run_config(config_file: str | None, overrides: dict[str, Any], sets: list[str]) -> RunConfig:
    """YAML file (optional) <- `--set` overrides <- explicit CLI flags (highest precedence)."""
    data: dict[str, Any] = read_yaml(config_file, "config file") if config_file else {}
    for text in sets:
        merge(data, *parse_override(text))
    for dotted, value in overrides.items():
        if value is not None:
            merge(data, dotted.split("."), value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_errors(err, data, config_file or "run config")) from err


def config_yaml(model: BaseModel) -> str:
    """A config as the YAML `load_run_config` reads back."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)


def dump_config(model: BaseModel, path: str | Path) -> None:
    Path(path).write_text(config_yaml(model))
