"""YAML loading into pydantic models with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pydantic
import yaml

from hfexport.errors import ConfigError

M = TypeVar("M", bound=pydantic.BaseModel)


def format_validation_error(source: str, error: pydantic.ValidationError) -> str:
    """One line per problem, each naming the file and the dotted field path."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        problems.append(f"{source}: {field or '<root>'}: {message}")
    return "; ".join(problems)


def load_model_file(path: Path, model: type[M]) -> M:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data.setdefault("name", path.stem)
    return validate_mapping(str(path), data, model)


def validate_mapping(source: str, data: dict, model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def dump_model(model: pydantic.BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json", exclude_defaults=False), sort_keys=False)
