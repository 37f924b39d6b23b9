"""Headers read once per request answer as Starlette's ``Headers.get`` does."""

from __future__ import annotations

from starlette.requests import Request

from service.api.headers import header, optional_header


def test_headers_answer_as_starlettes_get_does_first_value_of_a_repeated_one() -> None:
    raw = [(b"authorization", b"Bearer one"), (b"x-tag", b"caf\xe9"), (b"authorization", b"Bearer two")]
    request = Request({"type": "http", "headers": raw})
    for name in ("authorization", "x-tag", "absent"):
        assert optional_header(request, name.encode()) == request.headers.get(name)
        assert header(request, name.encode()) == request.headers.get(name, "")
    assert header(request, b"absent", "fallback") == "fallback"
