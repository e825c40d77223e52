"""The file form of the configuration: YAML <-> frozen dataclasses, ``--set`` overrides, flat params.

YAML holds exactly the fields of ``ExperimentConfig`` (nested by section). Reading is strict:
unknown keys, wrong types and invalid values raise ``ConfigError`` naming the key, what was
given and what is accepted. Nothing here mutates a config: every change builds a new one.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mgn.config import ConfigError, ExperimentConfig

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (the last would win silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(f"key {key!r} is given twice (line {key_node.start_mark.line + 1}): keep one")
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def to_dict(config: object) -> dict[str, Any]:
    """Plain nested dict of builtins (enums as their values, tuples as lists): the YAML form."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    plain_config: dict[str, Any] = plain(config)
    return plain_config


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _union(value: Any, tp: Any, key: str) -> Any:
    """``X | None`` and other unions: the first member the value converts to."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _convert(value, arg, key)
        except ConfigError as error:
            errors.append(str(error))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")


def _tuple(value: Any, tp: Any, key: str) -> tuple[Any, ...]:
    """``tuple[X, ...]`` from a list of any length, ``tuple[X, Y]`` from a list of exactly two."""
    args = typing.get_args(tp)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
    return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))


def _nested(value: Any, tp: Any, key: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
    return from_dict(tp, value, prefix=f"{key}.")


def _enum(value: Any, tp: type[Enum], key: str) -> Enum:
    try:
        return tp(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in tp)
        raise ConfigError(f"{key}: {value!r} is not one of {choices}") from None


def _bool(value: Any, tp: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _int(value: Any, tp: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return value


def _float(value: Any, tp: Any, key: str) -> float:
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; YAML 1.2 and people do not
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    return float(value)


def _str(value: Any, tp: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


_SCALARS: dict[Any, Callable[[Any, Any, str], Any]] = {bool: _bool, int: _int, float: _float, str: _str}


def _converter(tp: Any) -> Callable[[Any, Any, str], Any]:
    """The converter of a field type: by its shape (union, tuple, dataclass, enum), else the scalar's."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union
    if origin is tuple:
        return _tuple
    if dataclasses.is_dataclass(tp):
        return _nested
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _enum
    if tp in _SCALARS:
        return _SCALARS[tp]
    raise ConfigError(f"unsupported field type {_type_name(tp)}")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated field type, or raise ConfigError naming ``key``."""
    try:
        convert = _converter(tp)
    except ConfigError as error:
        raise ConfigError(f"{key}: {error}") from None
    return convert(value, tp, key)


# Keys earlier versions wrote, and what replaced them: a file or a recorded run that has one gets
# this instead of "unknown key".
RETIRED_KEYS = {
    "model.sync_bn": (
        "model.sync_bn was replaced by model.bn_group, the images whose BN statistics are taken together "
        "whatever the number of workers (the paper's 32; null = the whole global batch). sync_bn: true is "
        "bn_group: null; sync_bn: false meant one group per worker: bn_group: null on one worker, 32 on the "
        "paper's two. Replace the key"
    ),
}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from a nested dict; missing keys keep their defaults, unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    not_names = [k for k in data if not isinstance(k, str)]
    if not_names:
        raise ConfigError(f"{prefix or 'config'}: keys must be field names, got {not_names[0]!r}")
    unknown = sorted(set(data) - set(names))
    retired = [RETIRED_KEYS[prefix + k] for k in unknown if prefix + k in RETIRED_KEYS]
    if retired:
        raise ConfigError(retired[0])
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + k for k in unknown)}; valid keys here: {', '.join(prefix + n for n in names)}"
        )
    kwargs = {name: _convert(data[name], hints[name], prefix + name) for name in names if name in data}
    try:
        return cls(**kwargs)
    except TypeError as error:  # pragma: no cover - guarded by the checks above
        raise ConfigError(f"{prefix or cls.__name__}: {error}") from None


def read_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, or a ``ConfigError`` naming the file and the fault."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_StrictLoader) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    except ConfigError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` over ``base``, section by section."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = (
            merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def dump_yaml(config: ExperimentConfig, path: str | Path | None = None) -> str:
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def apply_overrides(config: T, overrides: typing.Iterable[str]) -> T:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars/lists) and re-validate."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=5")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"--set {dotted}: unknown config key {'.'.join(keys[: depth + 1])}")
            node = node[key]
        if keys[-1] not in node:
            parent = ".".join(keys[:-1])
            valid = ", ".join(f"{parent}.{k}" if parent else k for k in sorted(node))
            raise ConfigError(f"--set {dotted}: unknown config key {dotted}; valid keys here: {valid}")
        try:
            node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            node[keys[-1]] = raw
    return from_dict(type(config), data)


def flatten(config: object) -> dict[str, str]:
    """Dotted key -> string value for every leaf (MLflow params)."""
    return flatten_dict(to_dict(config))


def flatten_dict(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
