"""Validators for the personal data we collect (mainland mobile numbers and ID numbers) and for
the dates and times a request may carry."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumError

from app.core.text import OneLine


def normalize_mainland_mobile(value: str) -> str:
    """Return the 11-digit national form of a mainland China mobile number or raise."""
    raw = value.strip().replace(" ", "").replace("-", "")
    try:
        number = phonenumbers.parse(raw, "CN")
    except NumberParseException as exc:
        raise ValueError("not a valid mainland mobile number") from exc
    if number.country_code != 86 or not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid mainland mobile number")
    if phonenumbers.number_type(number) not in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise ValueError("not a valid mainland mobile number")
    national = str(number.national_number)
    if len(national) != 11:
        raise ValueError("not a valid mainland mobile number")
    return national


def _not_a_timestamp(value: object) -> object:
    """Query values are text, and pydantic reads a number as Unix time: "0.5" would pass as a
    date-time.  The document says ISO 8601 (`format: date-time` / `date`); so does the server."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("expected an ISO 8601 date or date-time")
    return value


_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def normalize_id_number(value: str) -> str:
    """Validate an 18-digit resident ID number (checksum, birth date, region) or raise."""
    try:
        compact = str(ric.validate(value.strip()))
    except StdnumError as exc:
        raise ValueError("not a valid resident ID number") from exc
    if len(compact) != 18:
        raise ValueError("not a valid resident ID number")
    return compact.upper()


# Declared in the OpenAPI document: an 11-digit mainland mobile number as the numbering plan
# allots them (libphonenumber's own pattern), optionally after +86.  The server also takes the
# usual spellings with spaces or dashes.
def _mobile_pattern() -> str:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    national = metadata.mobile.national_number_pattern if metadata and metadata.mobile else None
    return f"^(?:\\+86)?(?:{national or '1[0-9]{10}'})$"


MOBILE_PATTERN = _mobile_pattern()
MobilePhone = Annotated[
    str,
    StringConstraints(max_length=20),
    OneLine,
    AfterValidator(normalize_mainland_mobile),
    Field(json_schema_extra={"pattern": MOBILE_PATTERN}),
]
# 17 digits and a check character; the checksum, the region and the birth date are checked too.
ID_NUMBER_PATTERN = "^[0-9]{17}[0-9Xx]$"
IdNumber = Annotated[
    str,
    StringConstraints(max_length=18),
    OneLine,
    AfterValidator(normalize_id_number),
    Field(json_schema_extra={"pattern": ID_NUMBER_PATTERN}),
]


# Dates and times a request may carry: within these years, so that converting to UTC or
# stepping a day or a month never leaves the calendar (years 1 and 9999 are its edges).  The
# OpenAPI document says so with a pattern on the year.
EARLIEST = date(1900, 1, 1)
LATEST = date(2999, 12, 31)
_YEAR_PATTERN = "^(19[0-9]{2}|2[0-9]{3})-"


def _out_of_range() -> PydanticCustomError:
    return PydanticCustomError(
        "date_out_of_range",
        "must be between {earliest} and {latest}",
        {"earliest": EARLIEST.isoformat(), "latest": LATEST.isoformat()},
    )


def _day_in_range(value: date) -> date:
    if not EARLIEST <= value <= LATEST:
        raise _out_of_range()
    return value


def _time_in_range(value: datetime) -> datetime:
    """The local date within range; its UTC instant then is too (at most a day off, far from
    the calendar's edges)."""
    _day_in_range(value.date())
    return value


def _declared(fmt: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "format": fmt, "pattern": _YEAR_PATTERN})


# A calendar day (e.g. a filter's first or last day, the day of a record), ISO 8601 only.
Day = Annotated[
    date,
    BeforeValidator(_not_a_timestamp),
    AfterValidator(_day_in_range),
    _declared("date"),
]
# An instant with its offset (RFC 3339), e.g. when an activity starts.
Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_not_a_timestamp),
    AfterValidator(_time_in_range),
    _declared("date-time"),
]
# A time in a query filter: with an offset, or without one for a local time; ISO 8601 only.
FilterTime = Annotated[
    datetime,
    BeforeValidator(_not_a_timestamp),
    AfterValidator(_time_in_range),
    _declared("date-time"),
]
