"""Configs as trees of dataclasses: read from YAML, changed by ``key=value`` overrides, checked.

Generic machinery, used by every config of vidclip (training, the pretraining recipe): it works
on any tree of dataclasses whose leaf fields are ``int``, ``float``, ``bool``, ``str``, ``dict``,
``list`` or ``X | None``; a field that is a dataclass is a section (a nested mapping).

- :func:`build_dataclass`: a checked instance from a nested mapping (a parsed YAML file);
- :func:`apply_dataclass_overrides`: ``dotted.key=value`` overrides, parsed by the field type
  (``3e-4`` is a float, ``none``/``null`` clears an optional field, ``dict``/``list`` fields take
  YAML, a key below a ``dict`` field sets one entry of that free-form mapping);
- :func:`load_dataclass_yaml`: a YAML file, then overrides; :func:`dump_dataclass_yaml` the other way;
- :func:`check_listed_rules`: the value rules a config states as lists (choices, > 0, >= 0).

Every value is type checked against its field (an int where a float is expected is fine;
``"abc"`` for an int is not), every key must exist, and a config's own value rules run through
a :data:`ValueCheck`. Errors are :class:`~vidclip.core.errors.ConfigError` naming the file (or
the override) and the dotted key, with a "did you mean" for misspellings.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

import yaml

from vidclip.core.errors import ConfigError

__all__ = ["ValueCheck", "build_dataclass", "split_override", "apply_dataclass_overrides", "load_dataclass_yaml",
           "dump_dataclass_yaml", "check_listed_rules"]

T = TypeVar("T")

#: ``check(dotted_key, value, where)``: raise ConfigError when a (type-correct) leaf value breaks a
#: rule of the config (a range, a choice). ``where`` names the file or the override.
ValueCheck = Callable[[str, Any, str], None]

_NONE_WORDS = ("none", "null", "~", "")


# ----------------------------------------------------------------------------- type checking


def _is_optional(tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _type_name(tp) -> str:
    opt, base = _is_optional(tp)
    name = getattr(base, "__name__", str(base))
    return f"{name} or null" if opt else name


def _coerce(value: Any, tp, where: str, *, from_text: bool = False) -> Any:
    """Check/convert ``value`` to field type ``tp``; ``from_text`` = value is override text."""
    optional, base = _is_optional(tp)
    if from_text:
        if optional and value.strip().lower() in _NONE_WORDS:
            return None
        if base is str:
            return value
        if base in (dict, list):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ConfigError(f"{where}: cannot parse {value!r} as YAML: {e}") from e
        elif base is bool:
            low = value.strip().lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        elif base is int:
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        elif base is float:
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be null (expected {_type_name(tp)})")
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # PyYAML reads 1e-4 (no dot) as a string; accept numeric strings in files too.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if base is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    raise ConfigError(f"{where}: unsupported field type {tp}")  # pragma: no cover - programming error


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, where: str, known: Sequence[str]) -> ConfigError:
    by_leaf = {k.split(".")[-1]: k for k in known}
    close = difflib.get_close_matches(key.split(".")[-1], list(by_leaf), n=1)
    hint = f"; did you mean {by_leaf[close[0]]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint} (known: {', '.join(sorted(known))})")


def check_listed_rules(dotted: str, value: Any, where: str, *, choices: Mapping[str, Sequence],
                       positive: Collection[str], non_negative: Collection[str]) -> None:
    """The rules a config states as lists: ``dotted`` in ``choices`` takes one of its values, in
    ``positive`` must be > 0, in ``non_negative`` >= 0. ConfigError naming ``where`` and the key."""
    if dotted in choices and value not in choices[dotted]:
        raise ConfigError(f"{where}: {dotted} must be one of {list(choices[dotted])}, got {value!r}")
    if dotted in positive and not value > 0:
        raise ConfigError(f"{where}: {dotted} must be > 0, got {value!r}")
    if dotted in non_negative and value < 0:
        raise ConfigError(f"{where}: {dotted} must be >= 0, got {value!r}")


# ----------------------------------------------------------------------------- generic machinery


def build_dataclass(cls: type[T], data: Mapping, where: str, check: ValueCheck, *, prefix: str = "") -> T:
    """A checked ``cls`` instance from a nested mapping (missing keys keep their defaults).

    Args:
        cls: the root dataclass; fields that are dataclasses are sections (nested mappings).
        data: the values, e.g. a parsed YAML file.
        where: what the errors name first (a file path, ``"overrides"``).
        check: the value rules, called with every leaf's dotted key after its type is checked.
        prefix: dotted key of ``cls`` inside a larger config (``"optim."``); ``""`` for the root.

    Raises:
        ConfigError: ``"{where}: {dotted.key}: ..."`` for a value of the wrong type, a broken rule,
            or an unknown key (with a "did you mean" and the known keys).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: section {prefix.rstrip('.') or 'top level'!r} must be a mapping, got {data!r}")
    fields = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in fields:
            raise _unknown(dotted, where, [prefix + k for k in fields])
        tp = fields[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_dataclass(tp, value if value is not None else {}, where, check, prefix=dotted + ".")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}: {dotted}")
            check(dotted, kwargs[key], where)
    return cls(**kwargs)


def split_override(item: str, example: str = "section.key=value") -> tuple[str, str]:
    """``"dotted.key=value"`` -> (key, value text); ConfigError naming the override when ``=`` is
    missing (``example`` shows one). Needs no config class: verbs check overrides before loading one."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. {example})")
    key, text = item.split("=", 1)
    return key.strip(), text


def apply_dataclass_overrides(cfg: T, overrides: Sequence[str], check: ValueCheck, *,
                              example: str = "section.key=value") -> T:
    """Apply ``dotted.key=value`` overrides to a dataclass config; returns a new one (``cfg`` is kept).

    The value text is typed by the field: ``int``/``float`` parse numbers (``3e-4``), ``bool``
    takes true/false/yes/no/on/off/1/0, ``none``/``null``/``~``/empty clears an ``X | None`` field,
    ``str`` is taken verbatim, ``dict``/``list`` take YAML; a key below a ``dict`` field
    (``model.temporal_args.layers=2``) sets one entry of that free-form mapping (YAML value).
    Errors name the override and the dotted key; ``example`` is shown when ``=`` is missing.
    """
    data = dataclasses.asdict(cfg)
    root = type(cfg)
    for item in overrides:
        where = f"override {item!r}"
        key, text = split_override(item, example)
        parts = key.split(".")
        cls, node = root, data
        for i, part in enumerate(parts):
            fields = _fields(cls)
            dotted = ".".join(parts[: i + 1])
            prefix = ".".join(parts[:i])
            if part not in fields:
                raise _unknown(dotted, where, [f"{prefix}.{k}" if prefix else k for k in fields])
            tp = fields[part]
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:
                    raise ConfigError(f"{where}: {dotted} is a section; set one of its keys "
                                      f"({', '.join(dotted + '.' + k for k in _fields(tp))})")
                cls, node = tp, node[part]
                continue
            if last:
                # a field may keep some words as text that would otherwise clear it (model.pretrained=none
                # means random weights, not "unset")
                words = {f.name: f.metadata for f in dataclasses.fields(cls)}[part].get("text_words", ())
                if text.strip().lower() in words:
                    node[part] = text.strip().lower()
                else:
                    node[part] = _coerce(text, tp, f"{where}: {dotted}", from_text=True)
                check(dotted, node[part], where)
            elif _is_optional(tp)[1] is dict:
                # free-form mapping (model.temporal_args.layers=2): the rest of the key is its path
                sub = node.setdefault(part, {}) or {}
                node[part] = sub
                for p in parts[i + 1:-1]:
                    sub = sub.setdefault(p, {})
                    if not isinstance(sub, dict):
                        raise ConfigError(f"{where}: {key}: {p!r} is not a mapping")
                try:
                    sub[parts[-1]] = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    raise ConfigError(f"{where}: cannot parse {text!r} as YAML: {e}") from e
            else:
                raise ConfigError(f"{where}: {dotted} is a {_type_name(tp)}, it has no key {parts[i + 1]!r}")
            break
    return build_dataclass(root, data, "overrides", check)


def load_dataclass_yaml(cls: type[T], path: str | os.PathLike | None, overrides: Sequence[str], check: ValueCheck,
                        *, missing_hint: str = "config file not found", defaults: Mapping[str, Any] | None = None,
                        example: str = "section.key=value") -> T:
    """Read a YAML file into a checked ``cls``, then apply ``overrides`` (:func:`apply_dataclass_overrides`).

    Args:
        cls: the root dataclass.
        path: the YAML file; ``None`` starts from ``cls()`` (the built-in defaults).
        overrides: ``dotted.key=value`` strings, applied after the file.
        check: the value rules (:data:`ValueCheck`).
        missing_hint: the error for a missing file, after ``"{path}: "``.
        defaults: top-level values used where the file does not set them (``{"name": stem}``).
        example: an override shown when one lacks ``=``.

    Errors from the file name the file (``"{path}: optim.lr: expected a number ..."``), errors from
    an override name the override.
    """
    if path is None:
        cfg = cls()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: {missing_hint}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        data = data or {}  # an empty file: all defaults
        if defaults and isinstance(data, Mapping):
            data = {**defaults, **data}
        cfg = build_dataclass(cls, data, str(path), check)
    return apply_dataclass_overrides(cfg, overrides, check, example=example)


def dump_dataclass_yaml(cfg) -> str:
    """A dataclass config as YAML text, fields in their declared order (what a run saves and
    ``--print-config`` shows); :func:`load_dataclass_yaml` reads it back."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, default_flow_style=False)
