"""``GET /api/reports``: the caller's own jobs, newest first, a page at a time."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import require_caller
from service.api.bodies import parse
from service.api.resources import services
from service.api.responses import JSONResponse
from service.core.errors import BadRequest
from service.core.schemas import State
from service.store.listing import decode_cursor
from service.store.views import status_view

MAX_LIMIT = 100


class ListQuery(BaseModel):
    """The listing's query string. Unknown parameters are refused: a misspelt ``stat=failed`` would
    otherwise list every job as if it had been honoured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=20, ge=1, le=MAX_LIMIT, description="items per page")
    cursor: str | None = Field(default=None, description="`nextCursor` of the previous page")
    state: State | None = Field(default=None, description="only jobs in this state")


def list_query(request: Request) -> ListQuery:
    params = request.query_params
    repeated = sorted({name for name in params if len(params.getlist(name)) > 1})
    if repeated:
        issues = [f"query.{name}: given more than once" for name in repeated]
        raise BadRequest("the query failed validation: " + "; ".join(issues), issues)
    query = parse(ListQuery, dict(params), what="query")
    if query.cursor is not None:
        try:
            decode_cursor(query.cursor)
        except ValueError as exc:
            problem = "cursor: not a cursor this listing handed out (use nextCursor as it came)"
            raise BadRequest(problem, [problem]) from exc
    return query


async def list_reports(request: Request) -> Response:
    svc = services(request)
    caller = await require_caller(request, svc)
    query = list_query(request)
    page = await svc.listing.page(caller.user_id, limit=query.limit, cursor=query.cursor, state=query.state)
    # pdfUrl stays the API's own path (it works on every backend): a page of 100 would otherwise
    # sign 100 expiring links nobody may open; GET /api/reports/{jobId} signs the one asked for.
    items = [status_view(record["job_id"], record) for record in page.records]
    return JSONResponse({"items": items, "nextCursor": page.next_cursor})
