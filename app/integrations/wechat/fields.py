"""Subscribe-message values and WeChat's limits on them.

A template key's type is its name without the trailing number (`thing1` → `thing`).  WeChat
refuses a whole message (47003) when one value is too long, so every value is cut to its
type's limit before it is sent: thing ≤ 20 characters, phrase ≤ 5, name ≤ 10, and so on.
"""

from __future__ import annotations

from datetime import date, datetime

from app.core.clock import LOCAL_TZ

# type -> most characters WeChat accepts
LIMITS: dict[str, int] = {
    "thing": 20,
    "phrase": 5,
    "name": 10,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "phone_number": 17,
    "car_number": 8,
    "amount": 11,
    "time": 30,
    "date": 30,
}

Value = str | int | float | datetime | date | None


def field_type(key: str) -> str:
    return key.rstrip("0123456789")


def render(key: str, value: Value) -> str:
    """The text of one template value: times in local time, everything cut to its limit."""
    kind = field_type(key)
    if isinstance(value, datetime):
        local = value.astimezone(LOCAL_TZ)
        text = (
            f"{local.year}年{local.month}月{local.day}日"
            if kind == "date"
            else f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
        )
    elif isinstance(value, date):
        text = f"{value.year}年{value.month}月{value.day}日"
    elif value is None or value == "":
        text = "无"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = " ".join(str(value).split())  # no line breaks inside a value
    return cut(key, text)


def cut(key: str, text: str) -> str:
    limit = LIMITS.get(field_type(key))
    if limit is None or len(text) <= limit:
        return text
    if field_type(key) == "thing":
        return text[: limit - 1] + "…"
    return text[:limit]
