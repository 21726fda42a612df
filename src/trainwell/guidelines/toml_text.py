"""Commented TOML: a config document whose every choice carries a one-line comment saying why.

``tomli_w`` cannot write comments, so recipes are written by this small writer: a :class:`Document` of
tables of :class:`Choice` (a key, its value and why), where a value is a TOML scalar, a list of scalars, an
inline table (a ``dict``) or :class:`Items`, a multi-line array whose items carry comments of their own (the
layer list). :func:`render` writes the text; :func:`document_data` gives the plain data the text must parse
back to (the tests check that it does, with ``tomllib``).

Only what TOML 1.0 allows: comments may sit between the items of a multi-line array, also inside an inline
table's array value (the newlines and comments are then part of that value).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

INDENT = "  "
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# TOML basic strings: these escapes, and \uXXXX for every other control character.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


@dataclass(frozen=True)
class Item:
    """One item of a multi-line array, with the lines saying why (one per choice it makes)."""

    value: Any
    why: tuple[str, ...] = ()


@dataclass(frozen=True)
class Items:
    """A multi-line array: one item per line, each preceded by its comment lines."""

    items: tuple[Item, ...]


@dataclass(frozen=True)
class Choice:
    """``key = value`` preceded by ``# why`` (one line per choice the value makes); a choice with ``key =
    None`` is a comment only, for a choice the recipe leaves out on purpose (what to add, and when)."""

    key: str | None
    value: Any
    why: str | tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """``[name]`` (a dotted path: ``base.data`` is ``[base.data]``) and its choices; with ``array``, one
    ``[[name]]`` entry of an array of tables."""

    name: str
    choices: tuple[Choice, ...]
    array: bool = False
    why: tuple[str, ...] = ()  # comment lines above the header


@dataclass(frozen=True)
class Document:
    header: tuple[str, ...]  # comment lines at the top
    top: tuple[Choice, ...] = ()  # keys before the first table (e.g. an experiment's name)
    tables: tuple[Table, ...] = field(default_factory=tuple)


def key_text(key: str) -> str:
    return key if _BARE_KEY.match(key) else string_text(key)


def string_text(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value_text(value: Any, depth: int = 0) -> str:
    """The TOML text of ``value``; ``depth`` is the indentation level of the line it starts on."""
    if isinstance(value, Items):
        lines = ["["]
        for item in value.items:
            lines += [f"{INDENT * (depth + 1)}# {why}" for why in item.why]
            lines.append(f"{INDENT * (depth + 1)}{value_text(item.value, depth + 1)},")
        lines.append(f"{INDENT * depth}]")
        return "\n".join(lines)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # "0.001", "5e-05", "1.0": all valid TOML floats
    if isinstance(value, str):
        return string_text(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{key_text(k)} = {value_text(v, depth)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v, depth) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as a TOML value: {value!r}")


def _choice_lines(choice: Choice) -> list[str]:
    whys = (choice.why,) if isinstance(choice.why, str) else choice.why
    lines = [f"# {why}" for why in whys]
    if choice.key is not None:
        lines.append(f"{key_text(choice.key)} = {value_text(choice.value)}")
    return lines


def table_header(table: Table) -> str:
    path = ".".join(key_text(part) for part in table.name.split("."))
    return f"[[{path}]]" if table.array else f"[{path}]"


def render(document: Document) -> str:
    """The TOML text of ``document``, comments included."""
    lines = [f"# {line}" if line else "#" for line in document.header]
    for choice in document.top:
        lines += ["", *_choice_lines(choice)]
    for table in document.tables:
        lines += ["", *(f"# {why}" for why in table.why), table_header(table)]
        for choice in table.choices:
            lines += _choice_lines(choice)
    return "\n".join(lines) + "\n"


def plain(value: Any) -> Any:
    """``value`` with every :class:`Items` replaced by the list of its values (what TOML parses back)."""
    if isinstance(value, Items):
        return [plain(item.value) for item in value.items]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def document_data(document: Document) -> dict[str, Any]:
    """The plain data of ``document``: what ``tomllib.loads(render(document))`` returns."""
    data: dict[str, Any] = {c.key: plain(c.value) for c in document.top if c.key is not None}
    for table in document.tables:
        *parents, last = table.name.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        values = {c.key: plain(c.value) for c in table.choices if c.key is not None}
        if table.array:
            node.setdefault(last, []).append(values)
        else:
            node.setdefault(last, {}).update(values)
    return data
