"""``GET /openapi.json``: the OpenAPI 3.1 document, built from the app's routes and the operations
table, with components from the pydantic models."""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

import orjson
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.api.openapi.operations import OPERATIONS, models
from service.api.openapi.spec import ERROR_MEANINGS, Answer, Body, Operation, Param, Schema, error_codes

REF = "#/components/schemas/{model}"
# Routes that are part of something documented rather than endpoints of their own.
UNDOCUMENTED = frozenset({"/docs/assets/{name}"})
# Starlette's path parameters as the contract spells them.
PATH_NAMES = {"job_id": "jobId"}
RETRY_AFTER = {429: False, 503: True}  # status -> whether Retry-After is always there

HEADERS: dict[str, Schema] = {
    "X-Request-Id": {"description": "This request's id, as the service's logs name it.",
                     "schema": {"type": "string"}, "required": True},
    "Retry-After": {"description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 0}},
    "Location": {"description": "The new job's `statusUrl`.", "schema": {"type": "string"}, "required": True},
    "Idempotent-Replayed": {"description": "This answer replays an earlier submission.",
                            "schema": {"type": "string", "enum": ["true"]}, "required": True},
    "Content-Disposition": {"description": "`inline`, named after the report.",
                            "schema": {"type": "string"}, "required": True},
}  # fmt: skip
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "key": [{"apiKey": []}],
    "key_or_token": [{"apiKey": []}, {}],  # {}: no key, then the `token` parameter
    "metrics": [{"metricsToken": []}],
    "public": [],
}
SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "An API key (`python -m service keys create`): `Authorization: Bearer <key>`."},
    "metricsToken": {"type": "http", "scheme": "bearer", "description": "`METRICS_TOKEN`, for Prometheus."},
}  # fmt: skip


def openapi_path(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "{" + PATH_NAMES.get(m[1], m[1]) + "}", path)


def _ref(model: type[Any]) -> Schema:
    return {"$ref": REF.format(model=model.__name__)}


def _headers(names: tuple[str, ...], status: int) -> Schema:
    headers = {name: HEADERS[name] for name in ("X-Request-Id", *names)}
    if status in RETRY_AFTER:
        headers["Retry-After"] = {**HEADERS["Retry-After"], "required": RETRY_AFTER[status]}
    return headers


def _answer(answer: Answer, status: int) -> Schema:
    body: Schema = {"description": answer.description, "headers": _headers(answer.headers, status)}
    schema = _ref(answer.model) if answer.model is not None else answer.schema
    if schema is not None:
        body["content"] = {answer.media: {"schema": schema}}
    if answer.links:
        body["links"] = {
            target: {"operationId": target, "parameters": {"jobId": "$response.body#/jobId"}}
            for target in answer.links
        }
    return body


def _error(status: int, meaning: str, codes: dict[int, list[str]]) -> Schema:
    if status == 400:
        schema: Schema = {"$ref": REF.format(model="BadRequestBody")}
    else:
        schema = {"allOf": [{"$ref": REF.format(model="ErrorBody")}],
                  "properties": {"error": {"enum": codes[status]}}}  # fmt: skip
    return {
        "description": meaning or ERROR_MEANINGS[status],
        "headers": _headers((), status),
        "content": {"application/json": {"schema": schema}},
    }


def _parameter(param: Param) -> Schema:
    return {"name": param.name, "in": param.where, "required": param.required,
            "description": param.description, "schema": param.schema}  # fmt: skip


def _body(body: Body) -> Schema:
    media = {"application/json": _ref(body.model)} if body.model is not None else body.media
    return {
        "description": body.description,
        "required": True,
        "content": {kind: {"schema": schema} for kind, schema in media.items()},
    }


def operation_object(operation: Operation, codes: dict[int, list[str]]) -> Schema:
    responses = {str(status): _answer(answer, status) for status, answer in operation.answers.items()}
    for status, meaning in operation.errors.items():
        responses[str(status)] = _error(status, meaning, codes)
    built: Schema = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "security": SECURITY[operation.security],
        "parameters": [_parameter(param) for param in operation.params],
        "responses": dict(sorted(responses.items())),
    }
    if operation.description:
        built["description"] = operation.description
    if operation.body is not None:
        built["requestBody"] = _body(operation.body)
    return built


def documented(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """(path, method) of every route the document describes."""
    found = []
    for route in routes:
        if isinstance(route, Route) and route.path not in UNDOCUMENTED:
            found += [(route.path, method) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def _untitled(schema: Schema) -> Schema:
    """Without the titles pydantic makes of field names ("Jobid"): the names say it better."""
    properties = {name: {k: v for k, v in prop.items() if k != "title"}
                  for name, prop in schema.get("properties", {}).items()}  # fmt: skip
    return {**schema, "properties": properties} if properties else schema


def components() -> Schema:
    _, schemas = models_json_schema(models(), ref_template=REF, by_alias=True)
    defined = {name: _untitled(schema) for name, schema in schemas["$defs"].items()}
    return {"schemas": defined, "securitySchemes": SECURITY_SCHEMES}


def _version() -> str:
    try:
        return importlib.metadata.version("report-service")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0.0.0"


def openapi_document(routes: list[BaseRoute]) -> Schema:
    """Routes without an entry in the operations table are left out (a test fails on them)."""
    codes = error_codes()
    paths: dict[str, Schema] = {}
    for path, method in documented(routes):
        operation = OPERATIONS.get((path, method))
        if operation is not None:
            paths.setdefault(openapi_path(path), {})[method.lower()] = operation_object(operation, codes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "report-service",
            "version": _version(),
            "description": "Report jobs off the request path: submit, follow, download. Every error "
            'is JSON `{"error", "message"}`.',
        },
        "paths": paths,
        "components": components(),
        "security": SECURITY["key"],
    }


async def openapi_json(request: Request) -> Response:
    # Built on first use and kept with the app: its routes never change once it runs.
    state = request.app.state
    body: bytes | None = getattr(state, "openapi_document", None)
    if body is None:
        body = state.openapi_document = orjson.dumps(openapi_document(request.app.routes))
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})
