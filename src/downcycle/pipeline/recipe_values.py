"""Checking the values of a recipe against the typed fields of a stage's config, each mistake
reported at its place (``recipe.yaml: heal[1].lr: expected a number, got 'fast'``); names, paths
relative to the recipe and unknown keys (with the nearest allowed one)."""

from __future__ import annotations

import difflib
import glob
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import DowncycleError

__all__ = ["Where", "check_name", "coerce", "kind", "local_path", "opt_str", "scalar", "unknown", "unknown_key"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class Where:
    """Formats errors as ``FILE: key[1].sub: message``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str) -> DowncycleError:
        return DowncycleError(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")


def coerce(w: Where, where: str, value: Any, tp: Any) -> Any:
    """``value`` as the field type ``tp`` wants it; YAML numbers become strings where a field takes text."""
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = len(args) < len(typing.get_args(tp)), (args[0] if len(args) == 1 else str)
    if value is None:
        if optional:
            return None
        raise w.error(where, "must not be empty")
    if typing.get_origin(tp) is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(w, f"{where}[{i}]", v, typing.get_args(tp)[0] if typing.get_args(tp) else str) for i, v in enumerate(items)]
    if tp is bool:
        if not isinstance(value, bool):
            raise w.error(where, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise w.error(where, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise w.error(where, f"expected a number, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-3 as text; accept it as the number it is
        except (TypeError, ValueError):
            raise w.error(where, f"expected a number, got {value!r}") from None
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise w.error(where, f"expected a single value, got {kind(value)}")
    return Path(str(value)) if tp is Path else str(value)


def local_path(w: Where, where: str, value: str, base: Path, hub: bool) -> str:
    """A local path resolved against the recipe's directory (checked to exist), or a hub/dataset id as is."""
    if value.startswith("hf:"):
        return value
    if value.startswith("gen:"):  # text sampled from a model (`downcycle data`): the model's directory
        return "gen:" + local_path(w, where, value[len("gen:"):], base, hub=False)
    p = Path(value).expanduser()
    p = Path(os.path.normpath(p if p.is_absolute() else base / p))  # "recipes/../reference" -> "reference"
    if any(c in value for c in "*?["):
        if not glob.glob(str(p)):
            raise w.error(where, f"{value}: no file matches (relative to {base})")
        return str(p)
    if p.exists():
        return str(p)
    if hub and _HUB_ID.match(value) and not value.startswith("."):
        return value  # a hub id: resolved (and reported when unreachable) by the stage that loads it
    raise w.error(where, f"{value}: no such file or directory (relative to {base})")


def scalar(w: Where, where: str, value: Any) -> str:
    if isinstance(value, (dict, list)) or isinstance(value, bool) or value is None:
        raise w.error(where, f"expected a single value, got {kind(value)}")
    return str(value)


def opt_str(w: Where, where: str, value: Any) -> str | None:
    return None if value is None else scalar(w, where, value)


def check_name(w: Where, where: str, name: str, taken: list[str]) -> None:
    if not _NAME.match(name):
        raise w.error(where, f"{name!r}: use letters, digits, '.', '_' and '-' (it becomes a directory name)")
    if name in taken:
        raise w.error(where, f"{name!r} is used twice; give each entry its own `name`")


def unknown(w: Where, where: str, doc: dict, allowed: tuple[str, ...]) -> None:
    for key in doc:
        if str(key).replace("-", "_") not in allowed:
            raise unknown_key(w, where, str(key), list(allowed))


def unknown_key(w: Where, where: str, key: str, allowed: list[str]) -> DowncycleError:
    close = difflib.get_close_matches(key.replace("-", "_"), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
    return w.error(f"{where}.{key}" if where else key, f"unknown key{hint}")


def kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", type(None): "nothing"}.get(type(value), type(value).__name__)
