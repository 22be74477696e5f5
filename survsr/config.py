"""YAML configs validated against dataclass schemas, with ``key.sub=value`` overrides.

Each stage declares its schema as a (nested) dataclass next to its code; this module only knows how to
read YAML into one, reject what does not fit, apply overrides and hash the result. Errors always name the
file and the dotted key so that a typo in a 40-line YAML is found at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit its schema."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML11_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert what is unambiguous (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_EXP_FLOAT.fullmatch(value):
            # YAML 1.1 (PyYAML) reads 1e-16 as a string: only 1.0e-16 is a float there
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where and not where.endswith(":") else where
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (valid keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        sub = f"{where}.{name}" if where and not where.endswith(":") else f"{where}{name}"
        kwargs[name] = _coerce(value, hints[name], sub)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field with no default is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-4"`` -> (["train", "lr"], 0.0001); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.split("."), value


def is_override(token: str) -> bool:
    """Tell a ``key.sub=value`` token apart from a path or URL given on the same command line."""
    head = token.split("=", 1)[0]
    return "=" in token and bool(head) and all(p.isidentifier() for p in head.split("."))


def _apply_override(data: dict, keys: list[str], value: Any, source: str) -> None:
    node = data
    for i, k in enumerate(keys[:-1]):
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {source}: {'.'.join(keys[: i + 1])} is not a section")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.sub=value`` overrides to a raw (not yet validated) config mapping, in place; returns it.
    The one override parser: stage configs, the evaluation's ZSSR section and the Serve app's args use it."""
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, keys, value, text)
    return data


def resolve_path(path: str | Path | None, default_name: str | None) -> Path | None:
    """A config argument may be a path or a bare name of a file in ``configs/``."""
    if path is None:
        return CONFIG_DIR / default_name if default_name else None
    p = Path(path)
    if p.exists() or p.is_absolute() or p.parent != Path("."):
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.exists():
            return cand
    return p


def read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load(
    schema: type[T],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    default_name: str | None = None,
) -> T:
    """Read ``path`` (or ``configs/<default_name>``), apply overrides and validate against ``schema``.

    With neither a path nor a default the schema's own defaults are used.
    """
    resolved = resolve_path(path, default_name)
    data = read_yaml(resolved) if resolved is not None else {}
    label = f"{resolved}:" if resolved is not None else ""
    return _build(schema, apply_overrides(data, overrides), label)


def from_dict(schema: type[T], data: dict | None, label: str = "") -> T:
    return _build(schema, dict(data or {}), label)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """Stable 16-hex-digit hash of the validated config (key order and YAML formatting do not matter)."""
    payload = json.dumps(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- command-line arguments of a config
def add_config_args(parser: argparse.ArgumentParser, default_name: str | None) -> None:
    """``--config`` plus repeatable ``--set key.sub=value``; bare ``key=value`` positionals also work."""
    parser.add_argument("--config", default=None,
                        help=f"YAML config (path or name in configs/; default: {default_name})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set detector.min_face=12 (repeatable)")


def split_overrides(args: argparse.Namespace, positional: str) -> None:
    """Move ``key=value`` tokens out of a positional list into ``args.overrides``."""
    values = getattr(args, positional, None) or []
    keep = [v for v in values if not is_override(v)]
    args.overrides = list(getattr(args, "overrides", []) or []) + [v for v in values if is_override(v)]
    setattr(args, positional, keep)
