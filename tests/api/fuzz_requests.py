"""Hypothesis strategies for requests to the live API, one odd part at a time.

A request is drawn as what a real client of that endpoint sends, with one of its parts (the method,
the path, the query, the credentials, the headers, the body or its framing) replaced by something
odd; now and then every part is odd at once. So the odd part reaches the code behind the usual
ones (a deep JSON body gets past authentication and the media type check) instead of being
refused at the first check it meets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

from hypothesis import strategies as st
from starlette.routing import Route

from service.app import ROUTES
from tests.api.raw_http import RawRequest

T = TypeVar("T")
# (method, path template) of every endpoint, HEAD included where Starlette adds it to GET.
ROUTE_METHODS = sorted(
    {(method, route.path) for route in ROUTES if isinstance(route, Route) for method in route.methods or ()}
)
BODY_ROUTES = [("POST", "/api/reports"), ("POST", "/api/inputs")]
PARTS = ["method", "path", "query", "auth", "token", "headers", "body", "framing"]
_PARAM = re.compile(r"\{[a-z_]+\}")


@dataclass
class World:
    """What a request can refer to: the caller's live jobs and another user's, keys, tokens."""

    port: int
    key: bytes  # the usual caller's Authorization value
    other_keys: list[bytes]  # another user's, the metrics token
    job_ids: list[str]  # the caller's own first, then another user's
    tokens: dict[str, str]  # job id -> its eventsUrl token
    upload_url: str


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes no decoder accepts


def escaped(text: str) -> str:
    return quote(utf8(text), safe="")


odd_text = st.text(max_size=60)  # any code point, lone surrogates included
# Header values: bytes uvicorn lets through to the app (printable, tab, and 0x80-0xff, which
# Starlette decodes as Latin-1), or any byte but CR and LF (which would end the header).
_VISIBLE = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
header_bytes = st.one_of(
    st.lists(st.sampled_from(_VISIBLE), max_size=200).map(bytes),
    st.binary(max_size=100).map(lambda raw: bytes(b for b in raw if b not in b"\r\n")),
)
odd_job_ids = st.one_of(
    st.sampled_from(["0" * 32, "A" * 32, "../../etc/passwd", "", "%00", "a" * 5000, "٣" * 32, "²" * 32]),
    st.text(alphabet="0123456789abcdef", max_size=40),
    odd_text,
)
odd_tokens = st.one_of(
    st.sampled_from(
        ["²²²²²²²²²².0123456789ab." + "A" * 43, "9999999999.é." + "A" * 43, "١٢٣.x.y", "", "x" * 3000]
    ),
    odd_text,
)


def fill(template: str, job_id: str, *, raw: bool = False) -> bytes:
    segment = utf8(job_id) if raw else escaped(job_id).encode()
    return _PARAM.sub("{}", template).encode().replace(b"{}", segment)


def odd_paths(template: str) -> st.SearchStrategy[bytes]:
    unknown = st.sampled_from(
        [b"/api", b"/api/reports/", b"//api/usage", b"/api/reports/x/y/z", b"/%zz", b"*"]
    )
    return st.one_of(
        st.builds(lambda job_id, raw: fill(template, job_id, raw=raw), odd_job_ids, st.booleans()), unknown
    )


def odd_queries(world: World) -> st.SearchStrategy[bytes]:
    value = st.one_of(st.sampled_from(sorted(world.tokens.values())), odd_tokens, odd_text).map(escaped)
    names = st.sampled_from(["token", "name", "limit", "cursor", "state"])
    pairs = st.lists(
        st.tuples(names, st.one_of(value, st.sampled_from(["%ff%fe", "%", "&", "="]))), min_size=1, max_size=3
    )
    return pairs.map(lambda found: b"?" + "&".join(f"{k}={v}" for k, v in found).encode())


def odd_authorizations(world: World) -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.none(),
        st.sampled_from(world.other_keys),
        header_bytes.map(lambda raw: b"Bearer " + raw),
        st.sampled_from(
            [b"Bearer rsk_" + b"\xe9" * 43, b"Basic eA==", b"Bearer", b"bearer  rsk_" + b"A" * 43]
        ),
    )


def odd_headers() -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    values = {
        b"Last-Event-ID": st.one_of(
            st.sampled_from(
                [b"99999999999999999999-0", b"18446744073709551615-1", b"0-0", b"\xb2-\xb9", b"1-1"]
            ),
            header_bytes,
        ),
        b"Idempotency-Key": st.one_of(
            st.sampled_from([b"\xe9" * 20, b"k" * 200, b"", b"order-1234"]), header_bytes
        ),
        b"Content-Type": st.one_of(
            st.sampled_from(
                [b"text/plain; charset=utf-16", b"application/json; x=\xff", b";", b"APPLICATION/JSON ;"]
            ),
            header_bytes,
        ),
        b"X-Anything": header_bytes,
    }
    one = st.sampled_from(sorted(values)).flatmap(lambda name: values[name].map(lambda value: (name, value)))
    return st.lists(one, min_size=1, max_size=4)


def json_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), odd_text)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
        max_leaves=12,
    )


def odd_bodies(world: World) -> st.SearchStrategy[bytes]:
    report = st.fixed_dictionaries(
        {
            "inputDataUrl": st.one_of(
                st.sampled_from(["https://example.com/x.csv", world.upload_url]), odd_text
            )
        },
        optional={
            "idempotencyKey": odd_text,
            "extra": json_values(),
            "callbackUrl": st.one_of(
                st.sampled_from(["https://hooks.example.com/h"]), odd_text, json_values()
            ),
        },
    )
    as_json = st.one_of(report, json_values()).map(lambda value: utf8(json.dumps(value, ensure_ascii=False)))
    depth = st.sampled_from([2, 100, 999, 1025, 3000, 7000])
    nested = st.one_of(
        depth.map(lambda n: b"[" * n + b"]" * n),
        depth.map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        depth.map(lambda n: b'{"inputDataUrl": ' + b"[" * n + b"]" * n + b"}"),
    )
    return st.one_of(as_json, nested, odd_text.map(utf8), st.binary(max_size=300), st.just(b""))


def _usual_body(world: World, route: tuple[str, str]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    if route == ("POST", "/api/reports"):
        return b'{"inputDataUrl": "https://example.com/x.csv"}', [(b"Content-Type", b"application/json")]
    if route == ("POST", "/api/inputs"):
        return b"a,b\n1,2\n", [(b"Content-Type", b"text/csv")]
    return b"", []


def request_for(world: World, route: tuple[str, str], odd: str) -> st.SearchStrategy[RawRequest]:
    """The usual request for ``route``, its ``odd`` part (or "all" of them) drawn odd."""
    method, template = route

    def part(name: str, usual: st.SearchStrategy[T], strange: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
        return strange if odd in (name, "all") else usual

    body, head = _usual_body(world, route)
    key = world.other_keys[-1] if template == "/metrics" else world.key
    usual_path = st.sampled_from(world.job_ids[:2]).map(lambda job_id: fill(template, job_id))
    return st.builds(
        _request,
        part(
            "method",
            st.just(method.encode()),
            st.sampled_from([b"GET", b"POST", b"DELETE", b"HEAD", b"OPTIONS", b"PUT"]),
        ),
        part("path", usual_path, odd_paths(template)),
        part("query", st.just(b""), odd_queries(world)),
        part("auth", st.just(key), odd_authorizations(world)),
        part("token", st.none(), odd_tokens),
        part("headers", st.just(head), odd_headers().map(lambda extra: head + extra)),
        part("body", st.just(body), odd_bodies(world)),
        part("framing", st.just("length"), st.sampled_from(["chunked", "none", "short", "long"])),
    )


def _request(method: bytes, path: bytes, query: bytes, auth: bytes | None, token: str | None,
             head: list[tuple[bytes, bytes]], body: bytes, framing: str) -> RawRequest:  # fmt: skip
    if token is not None:  # a browser's EventSource: the token in the query, no Authorization header
        query, auth = b"?token=" + escaped(token).encode(), None
    credentials = [(b"Authorization", auth)] if auth is not None else []
    return RawRequest(method, path + query, credentials + head, body, framing)


def requests(world: World, routes: list[tuple[str, str]]) -> st.SearchStrategy[RawRequest]:
    chosen = st.tuples(st.sampled_from(routes), st.sampled_from([*PARTS, "all"]))
    return chosen.flatmap(lambda found: request_for(world, *found))
