"""``GET /openapi.json``: a valid OpenAPI 3.1 document of every route, its parameters, bodies,
answers and errors, built from the code (the routes, the pydantic models, the error tree)."""

from __future__ import annotations

from typing import Any, get_args

import httpx
import pytest
import schemathesis
from starlette.routing import Route

from service.api.openapi.document import UNDOCUMENTED, documented, openapi_document, openapi_path
from service.api.openapi.operations import OPERATIONS
from service.app import ROUTES
from service.core import schemas
from service.core.errors import JOB_ERROR_CODES
from service.store.jobs import TERMINAL_STATES

Document = dict[str, Any]


@pytest.fixture(scope="module")
def document() -> Document:
    return openapi_document(ROUTES)


def operation(document: Document, path: str, method: str) -> Document:
    found: Document = document["paths"][path][method]
    return found


def parameters(op: Document) -> dict[str, Document]:
    return {param["name"]: param for param in op["parameters"]}


def test_the_document_is_valid_openapi_3_1(document: Document) -> None:
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the official 3.1 meta-schema


async def test_the_service_serves_the_document_it_builds(api: httpx.AsyncClient, document: Document) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == document


def test_every_route_is_documented_and_nothing_else() -> None:
    routes = set(documented(ROUTES))
    assert routes == set(OPERATIONS)
    assert {r.path for r in ROUTES if isinstance(r, Route)} - {path for path, _ in routes} == UNDOCUMENTED


def test_every_operation_has_a_unique_id_and_the_links_name_real_ones(document: Document) -> None:
    ids = [op["operationId"] for methods in document["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))
    created = operation(document, "/api/reports", "post")["responses"]["202"]
    assert set(created["links"]) <= set(ids)
    assert {link["parameters"]["jobId"] for link in created["links"].values()} == {"$response.body#/jobId"}


@pytest.mark.parametrize(
    ("path", "method", "names"),
    [
        ("/api/reports", "get", {"limit", "cursor", "state"}),
        ("/api/reports", "post", {"Idempotency-Key"}),
        ("/api/reports/{jobId}/events", "get", {"jobId", "token", "Last-Event-ID"}),
        ("/api/inputs", "post", {"name"}),
    ],
)
def test_the_operation_names_each_of_its_parameters(
    document: Document, path: str, method: str, names: set[str]
) -> None:
    assert set(parameters(operation(document, path, method))) == names


def test_the_listing_parameters_carry_their_bounds(document: Document) -> None:
    params = parameters(operation(document, "/api/reports", "get"))
    assert params["limit"]["schema"] | {"description": ""} == {
        "type": "integer", "minimum": 1, "maximum": 100, "default": 20, "description": "",
    }  # fmt: skip
    assert params["state"]["schema"]["enum"] == list(schemas.STATES)
    key = parameters(operation(document, "/api/reports", "post"))["Idempotency-Key"]
    assert (key["in"], key["schema"]["minLength"], key["schema"]["maxLength"]) == ("header", 8, 128)


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/api/reports", "post", {"200", "202", "400", "401", "402", "413", "415", "422", "429", "503"}),
        ("/api/reports", "get", {"200", "400", "401", "503"}),
        ("/api/reports/{jobId}", "get", {"200", "401", "404", "503"}),
        ("/api/reports/{jobId}", "delete", {"200", "401", "404", "409", "503"}),
        ("/api/reports/{jobId}/pdf", "get", {"200", "401", "404", "409", "503"}),
        ("/api/reports/{jobId}/events", "get", {"200", "204", "401", "404", "429", "503"}),
        ("/api/inputs", "post", {"201", "400", "401", "413", "415", "429", "503"}),
        ("/api/usage", "get", {"200", "401", "503"}),
        ("/metrics", "get", {"200", "401", "404"}),
    ],
)
def test_each_endpoint_lists_the_statuses_it_answers(
    document: Document, path: str, method: str, statuses: set[str]
) -> None:
    assert set(operation(document, path, method)["responses"]) == statuses


def test_errors_are_the_contracts_json_with_codes_from_the_error_tree(document: Document) -> None:
    uploads = operation(document, "/api/inputs", "post")["responses"]
    too_many = uploads["429"]["content"]["application/json"]["schema"]
    assert too_many["properties"]["error"]["enum"] == ["quota_exceeded", "rate_limited"]
    assert too_many["allOf"] == [{"$ref": "#/components/schemas/ErrorBody"}]
    assert uploads["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/BadRequestBody")
    assert uploads["503"]["headers"]["Retry-After"]["required"] is True
    bad_request = document["components"]["schemas"]["BadRequestBody"]
    assert set(bad_request["required"]) == {"error", "message", "issues"}


def test_the_pdf_and_the_event_stream_have_their_own_media_types(document: Document) -> None:
    pdf = operation(document, "/api/reports/{jobId}/pdf", "get")["responses"]["200"]["content"]
    assert list(pdf) == ["application/pdf"]
    events = operation(document, "/api/reports/{jobId}/events", "get")["responses"]["200"]["content"]
    assert events["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/ServerSentEvent"}
    event = document["components"]["schemas"]["ServerSentEvent"]
    assert set(event["properties"]) == set(event["required"]) == {"id", "event", "data"}
    assert set(event["properties"]["event"]["enum"]) == {"progress", "text", "restart"} | TERMINAL_STATES


def test_the_request_body_is_the_validated_model(document: Document) -> None:
    body = operation(document, "/api/reports", "post")["requestBody"]
    assert body["required"] is True
    create = document["components"]["schemas"]["ReportCreate"]
    assert create["additionalProperties"] is False and create["required"] == ["inputDataUrl"]
    assert {"inputDataUrl", "idempotencyKey"} <= set(create["properties"])
    uploads = operation(document, "/api/inputs", "post")["requestBody"]["content"]
    assert set(uploads) == {"text/csv", "text/plain", "application/json"}


def test_keys_are_a_bearer_scheme_and_only_operations_endpoints_are_public(document: Document) -> None:
    assert document["components"]["securitySchemes"]["apiKey"] == {
        **document["components"]["securitySchemes"]["apiKey"], "type": "http", "scheme": "bearer",
    }  # fmt: skip
    public = {
        openapi_path(path)
        for path, method in OPERATIONS
        if operation(document, openapi_path(path), method.lower())["security"] == []
    }
    assert public == {"/healthz", "/readyz", "/", "/openapi.json", "/docs"}
    events = operation(document, "/api/reports/{jobId}/events", "get")
    assert events["security"] == [{"apiKey": []}, {}]  # or the `token` parameter


def test_the_wire_models_name_the_contracts_states_and_error_codes() -> None:
    assert set(get_args(schemas.JobErrorCode)) == JOB_ERROR_CODES
    assert set(schemas.STATES) == set(get_args(schemas.State)) == {"queued", "active"} | TERMINAL_STATES
