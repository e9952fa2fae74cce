"""Typed settings from YAML: read a file, apply `--set key=value` overrides, and build a settings dataclass,
naming any unknown key or wrongly typed value."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from mtdnn.errors import MTDNNError


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field's annotation; builds nested dataclasses; raises on mismatch."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except MTDNNError as error:  # the option of the value's own kind (a mapping, a list) explains best
                kind = typing.get_origin(option) or option
                errors.insert(0 if isinstance(kind, type) and isinstance(value, kind) else len(errors), error)
        raise errors[0]
    if origin is Literal:
        if value not in typing.get_args(annotation):
            allowed = ", ".join(repr(v) for v in typing.get_args(annotation))
            raise MTDNNError(f"config key `{key}` must be one of {allowed}; got {value!r}.")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise MTDNNError(f"config key `{key}` must be a mapping, got {value!r}.")
        return build_dataclass(annotation, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise MTDNNError(f"config key `{key}` must be a list, got {value!r}.")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise MTDNNError(f"config key `{key}` must be a mapping, got {value!r}.")
        key_type, value_type = typing.get_args(annotation)
        return {_coerce(name, key_type, key): _coerce(item, value_type, f"{key}.{name}") for name, item in value.items()}
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # YAML reads `5e-5` (no dot) as a string
            number = float(value)
        except ValueError:
            number = None
        if number is not None and not math.isfinite(number):  # .nan, .inf: no setting means that
            raise MTDNNError(f"config key `{key}` must be a finite number, got {value!r}.")
        if number is not None:
            return number
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise MTDNNError(
            f"config key `{key}` must be of type {_type_name(annotation)}, got {value!r} ({type(value).__name__})."
        )
    return value


def build_dataclass(cls: type, values: dict, prefix: str = "") -> Any:
    """Build `cls` from a mapping, naming any unknown key or wrongly typed value."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise MTDNNError(
            f"unknown config key `{prefix}{unknown[0]}`; the keys allowed here are: {', '.join(names)}."
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    return cls(**kwargs)


def apply_override(values: dict, assignment: str) -> None:
    """Apply one `--set a.b=value` to a nested mapping; the value is parsed as YAML."""
    if "=" not in assignment:
        raise MTDNNError(f"--set expects key=value (e.g. train.max_steps=20), got {assignment!r}.")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = values
    for key in keys[:-1]:
        if node.get(key) is None:  # an unset (null) key becomes a section: `data.max_train_samples.cola=300`
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise MTDNNError(f"--set {dotted}: `{key}` is not a section of the config.")
    try:
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise MTDNNError(f"--set {dotted}: the value {raw!r} is not valid YAML ({problem}); quote a string, "
                         "e.g. --set 'tasks=[rte, mrpc]'.") from None


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML settings file (`yaml.safe_load`); a missing or malformed file is an MTDNNError."""
    path = Path(path)
    if not path.is_file():
        raise MTDNNError(f"config file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MTDNNError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise MTDNNError(f"config file {path} must hold a mapping of keys, not {type(values).__name__}.")
    return values


def build_settings(cls: type, values: dict, overrides: list[str] | None = None, source: str | Path | None = None):
    """Apply `--set` overrides to a mapping and build the settings dataclass `cls`, naming `source` on error."""
    for assignment in overrides or []:
        apply_override(values, assignment)
    try:
        return build_dataclass(cls, values)
    except MTDNNError as error:
        raise MTDNNError(f"{error}{f' (in {source})' if source else ''}") from None


def with_overrides(settings: Any, overrides: list[str] | None, source: str | Path | None = None) -> Any:
    """`settings` (a settings dataclass) with `--set` overrides applied, parsed and checked as in a YAML file."""
    if not overrides:
        return settings
    return build_settings(type(settings), dataclasses.asdict(settings), overrides, source)
