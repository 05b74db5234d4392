"""Typed construction of config dataclasses from plain mappings (YAML / JSON / checkpoint metadata).

:func:`dataclass_from_dict` builds a dataclass from a dict, refusing unknown keys and wrongly typed values
with a :class:`~mentor3ad.errors.ConfigError` naming ``section.key``; used by :mod:`mentor3ad.config` for its
sections and by the backbone registry for backbone option sections. :func:`check_choice`: a key's value among
the allowed ones; :class:`UnknownConfigKey`: the error for a key the section does not have.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, List, Sequence, Tuple, Union

from .errors import ConfigError


class UnknownConfigKey(ConfigError):
    """A key the dataclass does not have (the message names ``prefix.key`` and the allowed keys)."""


def check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    """ConfigError ``<key> must be one of a, b, c, got 'x'`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def dataclass_from_dict(kind, data: Dict[str, Any], prefix: str):
    """Build dataclass ``kind`` from ``data``; unknown keys and wrongly typed values raise ConfigError
    naming ``prefix.key``. Used for the config sections and for backbone option sections."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix!r} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(kind)}
    hints = typing.get_type_hints(kind)
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise UnknownConfigKey(f"unknown config key {prefix}.{key} (allowed: {', '.join(known)})")
        kwargs[key] = _coerce(hints.get(key), value, f"{prefix}.{key}")
    try:
        return kind(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config section {prefix}: {err}") from None


def _coerce(hint, value, name: str):
    """Check ``value`` against a simple type hint (bool/int/float/str, lists, tuples, dicts)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return dataclass_from_dict(hint, value, name)
    if origin is Union:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        errors = []
        for option in options:
            try:
                return _coerce(option, value, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: unexpected value {value!r}")
    if origin in (tuple, Tuple, list, List) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else None
        items = [_coerce(item, v, name) for v in value] if item not in (None, Ellipsis) else list(value)
        return tuple(items) if origin in (tuple, Tuple) or hint is tuple else items
    if origin in (dict, Dict) or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value
