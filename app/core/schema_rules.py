"""Rules a pydantic model checks in code, declared in its JSON Schema too, so that the OpenAPI
document says exactly what the server accepts (a request valid by the document is never
refused for its shape, nor one invalid by it accepted)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JsonSchema = dict[str, Any]
SchemaRule = Callable[[JsonSchema], None]

# A list whose items must differ (the field's own validator refuses repeats).
UNIQUE: JsonSchema = {"uniqueItems": True}


def not_nullable(*names: str) -> SchemaRule:
    """Optional fields of a PATCH body that refuse an explicit null (absent keeps the value)."""

    def rule(schema: JsonSchema) -> None:
        for name in names:
            prop = schema["properties"][name]
            branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
            if len(branches) == 1:
                prop.update(branches[0])
            elif branches:
                prop["anyOf"] = branches
            prop.pop("default", None)

    return rule


def not_both(first: str, second: str) -> SchemaRule:
    """Two fields that may not both carry a value (either may be absent or null)."""

    def rule(schema: JsonSchema) -> None:
        schema.setdefault("allOf", []).append(
            {
                "not": {
                    "required": [first, second],
                    "properties": {
                        first: {"not": {"type": "null"}},
                        second: {"not": {"type": "null"}},
                    },
                }
            }
        )

    return rule


def required_when(field: str, values: list[str], required: str) -> SchemaRule:
    """`required` must be a text with a visible character when `field` is one of `values`."""

    def rule(schema: JsonSchema) -> None:
        schema.setdefault("allOf", []).append(
            {
                "if": {"properties": {field: {"enum": values}}, "required": [field]},
                "then": {
                    "properties": {required: {"type": "string", "pattern": r"\S"}},
                    "required": [required],
                },
            }
        )

    return rule


def rules(*parts: SchemaRule) -> SchemaRule:
    def rule(schema: JsonSchema) -> None:
        for part in parts:
            part(schema)

    return rule
