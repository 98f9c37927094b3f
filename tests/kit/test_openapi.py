"""The committed OpenAPI document is the one the app serves, and it is valid OpenAPI 3.1."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from openapi_spec_validator import validate

from app.cli import openapi_text

DOC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


class TestOpenAPIDocument:
    async def test_committed_document_is_current(self, client: httpx.AsyncClient) -> None:
        served = (await client.get("http://test/openapi.json")).json()
        assert DOC.exists(), "run `quyu export-openapi`"
        assert DOC.read_text(encoding="utf-8") == openapi_text(served), (
            "openapi/openapi.json is stale: run `quyu export-openapi` (make openapi)"
        )

    def test_valid_openapi_31(self) -> None:
        document = json.loads(DOC.read_text(encoding="utf-8"))
        assert document["openapi"].startswith("3.1")
        validate(document)

    def test_every_operation_is_named_and_lists_its_errors(self) -> None:
        document = json.loads(DOC.read_text(encoding="utf-8"))
        seen: set[str] = set()
        for path, item in document["paths"].items():
            for method, op in item.items():
                op_id = op.get("operationId", "")
                assert op_id and op_id.islower() and " " not in op_id, (method, path)
                assert op_id not in seen, f"duplicate operationId {op_id}"
                seen.add(op_id)
                if path.startswith("/api/"):
                    errors = [s for s in op["responses"] if s[0] in "45"]
                    assert errors, f"{method.upper()} {path} lists no error responses"
                    for status in errors:
                        content = op["responses"][status].get("content", {})
                        # the OAuth token endpoint answers in RFC 6749 form (application/json)
                        oauth = path.endswith("/auth/token") and status in ("400", "401")
                        assert "application/problem+json" in content or oauth, (
                            method,
                            path,
                            status,
                        )
