"""Typed configuration: dataclasses loaded from YAML with dotted ``key=value`` overrides.

Every run is described by one dataclass tree. Loading checks each key and each value's
type at start-up, so a typo fails in the first second with the closest valid key instead
of hours later, and the resolved tree is saved next to the run so it can be repeated.
Values in overrides are parsed with ``yaml.safe_load`` (never ``eval``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from radpair.errors import ConfigError, closest

C = TypeVar("C")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; allow the lossless int->float widening."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key {key!r}: {value!r} is not of type {tp}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        resolve = getattr(tp, "from_mapping", None)
        if resolve is not None:  # a family of configs chosen by a key (e.g. method.name)
            return resolve(value, key)
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected float, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected int, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[C], data: Mapping[str, Any] | None, prefix: str = "") -> C:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else key
            hint = closest(key, fields)
            msg = f"unknown config key {full!r}"
            if hint:
                msg += f"; did you mean {(prefix + '.' if prefix else '') + hint!r}?"
            raise ConfigError(msg + f" (valid keys here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        full = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], full)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-3", "train.epochs=3"]`` into a nested dict."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, value = _parse_override(item)
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return nested


def apply_overrides(base: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``base`` with each ``key.subkey=value`` set, in order: the value replaces what the key
    held, a mapping included. Merging instead (``deep_merge``) made ``optim.lr_scale={}``
    keep the recipe's scales, so a preset could never clear a mapping; the replicate's
    RadTex pretraining trained its decoder at 0.005x the intended rate that way."""
    out = deep_merge(base, {})
    for key, value in _flat_overrides(overrides):
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, Mapping) else {}
            node = node[part]
        node[parts[-1]] = value
    return out


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.subkey=value")
    key, raw = item.split("=", 1)
    return key.strip(), (yaml.safe_load(raw) if raw != "" else "")


def _flat_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    parse_overrides(overrides)  # the same errors as ever (a key that is not a section), before anything is set
    return [_parse_override(item) for item in overrides]


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping at the top of a YAML file, or a ConfigError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping at top level")
    return loaded


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Load ``cls`` from an optional YAML file plus dotted overrides (overrides win)."""
    data: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    update = parse_overrides(overrides)
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
        # a section chosen by its name (method.name=...): an override that names another
        # member replaces the file's section instead of mixing two members' keys
        hint = typing.get_type_hints(cls).get(f.name)
        new, old = update.get(f.name), data.get(f.name)
        if (hasattr(hint, "from_mapping") and isinstance(new, Mapping) and isinstance(old, Mapping)
                and "name" in new and new["name"] != old.get("name", getattr(hint, "name", new["name"]))):
            data = {**data, f.name: {}}
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def save_config(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
