"""The OpenAPI document: every operation lists its problem+json error responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from app.core.errors import PROBLEM_JSON


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details; `code` is stable and meant for machines."""

    type: str = Field(examples=["urn:quyu:problem:invalid_transition"])
    title: str
    status: int
    detail: str
    code: str = Field(examples=["invalid_transition"])
    errors: list[FieldError] | None = Field(default=None, description="Present on 422")


# The keys IdempotencyMiddleware accepts (app/core/middleware.py): printable ASCII, no space.
IDEMPOTENCY_KEY_PATTERN = "^[!-~]+$"

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, expired or forged access token",
    403: "Signed in but not allowed",
    404: "Not found, or not visible to the caller",
    409: "Conflicts with the current state (see `code`)",
    412: "Precondition failed",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input; `errors` names the fields. Nothing was written",
    429: "Too many requests; see `Retry-After`",
    503: "Temporarily unavailable",
    500: "Internal error (a bug: report it with the X-Request-ID)",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error statuses it may answer with."""
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }


def _problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or _DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=(
                "Errors are RFC 9457 `application/problem+json` with a stable `code`. "
                "Human text is zh-CN by default, English with `Accept-Language: en`. "
                "Creating POSTs accept `Idempotency-Key`; single-resource GETs return `ETag`."
            ),
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                responses: dict[str, Any] = op.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = _problem_response(422)
                if op.get("security") and "401" not in responses:
                    responses["401"] = _problem_response(401)
                if method in ("post", "put", "patch", "delete") and path.startswith("/api/"):
                    responses.setdefault("422", _problem_response(422))
                    if method == "post":
                        op.setdefault("parameters", []).append(
                            {
                                "name": "Idempotency-Key",
                                "in": "header",
                                "required": False,
                                "description": (
                                    "Retry safely: the first answer is replayed for 24 h"
                                ),
                                # Printable ASCII without spaces, as the middleware
                                # accepts (422 `idempotency_key_invalid` otherwise).
                                "schema": {
                                    "type": "string",
                                    "minLength": 1,
                                    "maxLength": 255,
                                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                                },
                            }
                        )
                        responses.setdefault("409", _problem_response(409))
                if "requestBody" in op:
                    # A body the framework cannot decode (invalid UTF-8, a broken multipart
                    # stream) is answered 400 before validation, by the framework itself.
                    responses.setdefault(
                        "400", _problem_response(400, "Body cannot be decoded. Nothing was written")
                    )
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400 and "content" in response:
                        content = response["content"]
                        if PROBLEM_JSON not in content or "application/json" in content:
                            if "schema" in content.get("application/json", {}):
                                ref = content["application/json"]["schema"]
                                if ref.get("$ref", "").endswith("/Problem"):
                                    response["content"] = {PROBLEM_JSON: {"schema": ref}}
                        elif not content[PROBLEM_JSON].get("schema"):
                            content[PROBLEM_JSON]["schema"] = {
                                "$ref": "#/components/schemas/Problem"
                            }
                if "security" in op or path.startswith("/api/"):
                    responses.setdefault("500", _problem_response(500))
                    # Any route that reaches the database answers this while it is away.
                    responses.setdefault(
                        "503",
                        _problem_response(
                            503, "The database is unreachable; retry after `Retry-After`"
                        ),
                    )
        components.setdefault(
            "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        for name, sub in (
            Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            components.setdefault(name, sub)
        components["Problem"].pop("$defs", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
