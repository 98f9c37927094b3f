"""Characters a string input may hold, checked once for every request.

C0 control characters (U+0000 to U+001F) and unpaired surrogates are refused in every string
of every request: JSON bodies, form bodies, query strings and paths (app/core/limits.py does it
before the request is parsed).  Tab, CR and LF pass that check because multi-line text
(descriptions, notes, reasons) may hold them; single-line fields (names, titles, phone numbers,
addresses) carry the `OneLine` mark and refuse them too.  `printable` makes text read back from
storage (rows written before these checks) safe for a spreadsheet cell or a CSV field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Controls refused everywhere: C0 except tab, LF and CR, plus unpaired surrogates (they cannot
# be encoded as UTF-8, so no database could store them).
_REFUSED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
# Refused in single-line text as well: tab, LF and CR.
_LINE_BREAKS = re.compile(r"[\t\n\r]")
# What a spreadsheet cell or a CSV field must not hold (openpyxl refuses the same set).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def has_refused(value: str) -> bool:
    """True when `value` holds a character refused in every string input."""
    return _REFUSED.search(value) is not None


def refused_in(value: Any, path: str = "") -> Iterator[str]:
    """The dotted paths of the strings (keys included) of a decoded JSON value that hold a
    refused character; "" names the value itself."""
    if isinstance(value, str):
        if has_refused(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and has_refused(key):
                yield child
            yield from refused_in(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from refused_in(item, f"{path}.{index}" if path else str(index))


def _single_line(value: str) -> str:
    if _LINE_BREAKS.search(value) or has_refused(value):
        raise PydanticCustomError(
            "control_character", "must be one line, without tab, line break or control characters"
        )
    return value


# What the OpenAPI document says of a one-line field: no tab or line break, and at least one
# character that is not white space (surrounding white space is stripped before the length is
# checked).  Other control characters are refused in every string, which the document's
# description of the 422 says.
ONE_LINE_PATTERN = r"^[^\t\n\r]*\S[^\t\n\r]*$"


class _OneLine:
    """The mark of a one-line text field: no tab, CR, LF or other control character, declared
    in the JSON Schema as `ONE_LINE_PATTERN`.  It goes after the field's `StringConstraints`, so
    that surrounding whitespace is stripped first:
    `Annotated[str, StringConstraints(strip_whitespace=True, max_length=50), OneLine]`."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_single_line, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        declared = handler(schema)
        declared.setdefault("pattern", ONE_LINE_PATTERN)
        return declared


OneLine = _OneLine()


def printable(value: str) -> str:
    """`value` without the control characters that a spreadsheet cell or a CSV field cannot
    hold (tab, LF and CR are kept)."""
    return _UNPRINTABLE.sub("", value)
