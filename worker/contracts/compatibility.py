"""Compatibility: may a schema replace another under the same version? (schemas/released/)

For an event the worker writes (escalations, results, dead letters), a consumer validating with the
released schema must accept every message the new one allows: `problems(new, released)` must be
empty. For the event it reads (feedback), every message valid under the released schema must still
be accepted: `problems(released, new)`. A change that fails is a new version (`.v2`), published
beside the old one.

Covers what the pydantic-generated schemas use: type, enum, const, anyOf, properties, required,
additionalProperties, items, $ref into $defs, numeric and length bounds, format. Anything it cannot
prove is reported, never assumed.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
BOUNDS_MIN = ("minimum", "exclusiveMinimum", "minLength", "minItems")
BOUNDS_MAX = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


def problems(narrow: Schema, wide: Schema) -> list[str]:
    """Why some instance valid under `narrow` might be invalid under `wide` (empty: none can be)."""
    return _within(narrow, narrow, wide, wide, "$")


def _resolve(node: Schema, root: Schema) -> Schema:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        node = {**root["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _types(node: Schema) -> set[str] | None:
    if "type" in node:
        types = {node["type"]} if isinstance(node["type"], str) else set(node["type"])
        return types | ({"integer"} if "number" in types else set())
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        return {_json_type(v) for v in values}
    return None  # unconstrained


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _within(narrow: Schema, narrow_root: Schema, wide: Schema, wide_root: Schema, where: str) -> list[str]:
    narrow, wide = _resolve(narrow, narrow_root), _resolve(wide, wide_root)
    if "anyOf" in narrow:  # every branch must fit
        return [p for branch in narrow["anyOf"] for p in _within(branch, narrow_root, wide, wide_root, where)]
    if "anyOf" in wide:  # some branch must take it whole
        found = [_within(narrow, narrow_root, branch, wide_root, where) for branch in wide["anyOf"]]
        return [] if any(not f for f in found) else [f"{where}: fits none of the released alternatives"]
    out: list[str] = []
    narrow_types, wide_types = _types(narrow), _types(wide)
    if wide_types is not None and (narrow_types is None or not narrow_types <= wide_types):
        out.append(f"{where}: type {sorted(narrow_types or ['any'])} is wider than {sorted(wide_types)}")
    for key in ("enum", "const"):
        if key in wide:
            allowed = wide["enum"] if key == "enum" else [wide["const"]]
            values = narrow.get("enum", [narrow["const"]] if "const" in narrow else None)
            if values is None or any(v not in allowed for v in values):
                out.append(f"{where}: values {values if values is not None else 'any'} beyond {allowed}")
    for key in BOUNDS_MIN:
        if key in wide and not (key in narrow and narrow[key] >= wide[key]):
            out.append(f"{where}: {key} {narrow.get(key)} below {wide[key]}")
    for key in BOUNDS_MAX:
        if key in wide and not (key in narrow and narrow[key] <= wide[key]):
            out.append(f"{where}: {key} {narrow.get(key)} above {wide[key]}")
    if "format" in wide and narrow.get("format") != wide["format"]:
        out.append(f"{where}: format {narrow.get('format')} where {wide['format']} was promised")
    if "items" in wide:
        out += _within(narrow.get("items", {}), narrow_root, wide["items"], wide_root, f"{where}[]")
    if "properties" in wide or "required" in wide or "additionalProperties" in wide:
        out += _object(narrow, narrow_root, wide, wide_root, where)
    return out


def _object(narrow: Schema, narrow_root: Schema, wide: Schema, wide_root: Schema, where: str) -> list[str]:
    out = [
        f"{where}: {name} is no longer required"
        for name in wide.get("required", [])
        if name not in narrow.get("required", [])
    ]
    narrow_props, wide_props = narrow.get("properties", {}), wide.get("properties", {})
    wide_extra = wide.get("additionalProperties", True)
    for name, node in narrow_props.items():
        if name in wide_props:
            out += _within(node, narrow_root, wide_props[name], wide_root, f"{where}.{name}")
        elif wide_extra is False:
            out.append(f"{where}.{name}: a new property where the released schema allows none")
        elif isinstance(wide_extra, dict):
            out += _within(node, narrow_root, wide_extra, wide_root, f"{where}.{name}")
    narrow_extra = narrow.get("additionalProperties", True)
    for name, node in wide_props.items():
        if name not in narrow_props and narrow_extra is not False and _resolve(node, wide_root):
            out.append(
                f"{where}.{name}: no longer described, so any value may come where the released schema had rules"
            )
    return out
