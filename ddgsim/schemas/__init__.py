"""JSON Schemas of ddgsim's file formats, shipped with the package and used by every reader.

``profile``, ``plan``, ``metrics`` and ``trace`` (``ddgsim/schemas/NAME.schema.json``,
JSON Schema 2020-12, every field described). :func:`check` validates decoded JSON with
``jsonschema`` and turns the most relevant violation into one line naming the field;
numbers must also be finite (JSON Schema cannot say so; Python's ``json`` reads ``NaN``).
"""

from __future__ import annotations

import functools
import json
import math
from importlib.resources import files
from typing import Any

from ddgsim.errors import malformed

KINDS = ("profile", "plan", "metrics", "trace")


@functools.cache
def schema(kind: str) -> dict[str, Any]:
    """The schema of ``kind`` (one of :data:`KINDS`)."""
    text = files("ddgsim.schemas").joinpath(f"{kind}.schema.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@functools.cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(kind))


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _non_finite(data: Any, path: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    if isinstance(data, float) and not math.isfinite(data):
        return path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = _non_finite(value, (*path, key))
        if found is not None:
            return found
    return None


def check(data: Any, kind: str, where: str) -> None:
    """:class:`~ddgsim.errors.FileError` ``malformed KIND WHERE: field 'F' ...`` (one line) unless ``data``
    is a valid ``kind``."""
    from jsonschema.exceptions import best_match

    if not isinstance(data, dict):
        raise malformed(kind, where, f"expected a JSON object, got {type(data).__name__}")
    fmt = schema(kind).get("properties", {}).get("format", {}).get("const")
    if fmt is not None and "format" in data and data["format"] != fmt:  # another format or version: say that first
        raise malformed(kind, where, f"field 'format' must be {fmt!r}, got {data['format']!r:.80}")
    err = best_match(_validator(kind).iter_errors(data))
    if err is not None:
        path = list(err.absolute_path)
        if err.validator == "required":
            missing = next((p for p in err.validator_value if p not in (err.instance or {})), "?")
            path.append(missing)
            why = "is missing"
        elif err.validator == "const":
            why = f"must be {err.validator_value!r}, got {err.instance!r:.80}"
        elif err.validator == "enum":
            why = f"must be one of {', '.join(map(repr, err.validator_value))}, got {err.instance!r:.80}"
        else:
            value = repr(err.instance)
            why = f"{err.message.replace(value, '').strip() or 'is invalid'}: got {value[:80]}"
        name = _field(path) or "(top level)"
        raise malformed(kind, where, f"field '{name}' {why}")
    bad = _non_finite(data)
    if bad is not None:
        raise malformed(kind, where, f"field '{_field(bad)}' must be a finite number")


def _type_of(node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[-1]
    t = node.get("type", "any")
    kinds = t if isinstance(t, list) else [t]
    if "array" in kinds and isinstance(node.get("items"), dict):
        kinds = [f"array of {_type_of(node['items'])}" if k == "array" else k for k in kinds]
    return " or ".join(kinds)


def _rows(node: dict[str, Any], prefix: str = "") -> list[str]:
    required = set(node.get("required", []))
    rows = []
    for name, sub in node.get("properties", {}).items():
        need = "yes" if name in required else ""
        rows.append(f"| `{prefix}{name}` | {_type_of(sub)} | {need} | {sub.get('description', '')} |")
        if sub.get("type") == "object" and "properties" in sub:
            rows += _rows(sub, f"{prefix}{name}.")
    return rows


def markdown() -> str:
    """docs/formats.md: every format's fields, from the schemas (``python -m ddgsim.schemas``)."""
    out = ["# File formats", "",
           "Generated from the JSON Schemas in `ddgsim/schemas/` by `python -m ddgsim.schemas > docs/formats.md`",
           "(a test checks that this file is current). Every reader checks its input against these schemas",
           "with `jsonschema`; a file that does not conform is refused with one line naming the field.", ""]
    for kind in KINDS:
        s = schema(kind)
        out += [f"## {s['title']} (`{kind}.schema.json`)", "", s["description"], "",
                "| field | type | required | meaning |", "| --- | --- | --- | --- |", *_rows(s), ""]
        for name, sub in s.get("$defs", {}).items():
            out += [f"**{name}** — {sub.get('description', '')}", "",
                    "| field | type | required | meaning |", "| --- | --- | --- | --- |", *_rows(sub), ""]
    return "\n".join(out)
