"""The shapes that cross HTTP for `auth` and `me`."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.core import clock
from app.core.openapi import Problem
from app.core.schema_rules import not_both, not_nullable, rules
from app.core.text import OneLine
from app.core.validators import Day, IdNumber, MobilePhone
from app.models.enums import Gender, OfficerRole, PartyStatus

PASSWORD_MIN = 8
PASSWORD_MAX = 128
SKILLS_MAX = 20

Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), OneLine
]
LongName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), OneLine
]
Password = Annotated[str, StringConstraints(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
Skill = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=30), OneLine
]


def _not_in_future(value: date) -> date:
    if value > clock.local_today():
        raise ValueError("must not be in the future")
    return value


PastDate = Annotated[Day, AfterValidator(_not_in_future)]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: MobilePhone = Field(description="Mainland mobile number, e.g. 13812345678")
    password: Password
    name: Name


class OfficeRead(BaseModel):
    """An organization the caller serves as an officer."""

    org_id: uuid.UUID
    org_name: str
    role: OfficerRole


class MeRead(BaseModel):
    id: uuid.UUID
    phone: str
    name: str
    role: Literal["admin", "member"]
    gender: Gender | None
    party_status: PartyStatus | None
    joined_party_on: date | None
    record_org_id: uuid.UUID | None
    record_org_name: str | None
    employer: str | None
    post_title: str | None
    skills: list[str]
    id_number_masked: str | None = Field(
        description="The ID number, masked; the number itself is write-only"
    )
    offices: list[OfficeRead]
    created_at: datetime


class MeUpdate(BaseModel):
    """Fields to change; a field set to null is cleared, a field left out is kept."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=rules(not_nullable("name"), not_both("record_org_id", "record_org_name")),
    )

    name: Name | None = None
    gender: Gender | None = None
    party_status: PartyStatus | None = None
    joined_party_on: PastDate | None = None
    record_org_id: uuid.UUID | None = Field(
        default=None, description="The organization holding the member's record, if it is ours"
    )
    record_org_name: LongName | None = Field(
        default=None, description="Where the record sits when it is not one of ours"
    )
    employer: LongName | None = None
    post_title: (
        Annotated[
            str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), OneLine
        ]
        | None
    ) = None
    skills: list[Skill] | None = Field(default=None, max_length=SKILLS_MAX)
    id_number: IdNumber | None = Field(
        default=None, description="Resident ID number (write-only; read back masked)"
    )

    @field_validator("name")
    @classmethod
    def _name_not_null(cls, value: str | None) -> str:
        # Runs only for a value that was sent: null is refused, leaving the field out is fine.
        if value is None:
            raise ValueError("name cannot be cleared")
        return value

    @model_validator(mode="after")
    def _one_record_org(self) -> Self:
        if self.record_org_id is not None and self.record_org_name is not None:
            raise ValueError("give record_org_id or record_org_name, not both")
        return self


class LogoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _grant_type_required(schema: dict[str, Any]) -> None:
    schema.setdefault("required", []).append("grant_type")


class TokenRequest(BaseModel):
    """RFC 6749 token request, form-encoded.  Parameters are checked by the endpoint itself so
    that every problem is answered in RFC 6749 form; unknown parameters are ignored."""

    model_config = ConfigDict(json_schema_extra=_grant_type_required)

    # Declared required and one of three; the endpoint itself answers 400 `invalid_request`
    # or `unsupported_grant_type` in RFC 6749 form when it is not.
    grant_type: str | None = Field(
        default=None,
        description="password, refresh_token or client_credentials",
        json_schema_extra={"enum": ["password", "refresh_token", "client_credentials"]},
    )
    username: str | None = Field(default=None, description="Phone number (password grant)")
    password: str | None = Field(default=None, description="Password (password grant)")
    refresh_token: str | None = Field(default=None, description="refresh_token grant")
    scope: str | None = Field(
        default=None, description="Space-separated scopes (client_credentials)"
    )
    client_id: str | None = Field(
        default=None, description="client_credentials, unless sent with HTTP Basic"
    )
    client_secret: str | None = Field(
        default=None, description="client_credentials, unless sent with HTTP Basic"
    )


class TokenOut(BaseModel):
    """RFC 6749 §5.1 access token response."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Lifetime of the access token in seconds")
    refresh_token: str | None = Field(
        default=None, description="Present for the password and refresh_token grants"
    )
    scope: str | None = Field(default=None, description="Granted scopes (client_credentials)")


class OAuthProblem(Problem):
    """RFC 6749 §5.2 error, carrying the RFC 9457 problem fields as well."""

    error: Literal[
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unsupported_grant_type",
        "invalid_scope",
    ]
    error_description: str


class SessionRead(BaseModel):
    id: uuid.UUID
    device: str | None
    auth_method: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool = Field(description="True for the session of the access token used")


class SessionPage(BaseModel):
    items: list[SessionRead]
    next_cursor: str | None = None
