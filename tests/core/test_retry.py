"""The one Retry-After parser and the one backoff: what a remote server's hint may and may not do."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from service.core.retry import backoff_seconds, parse_retry_after

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), (" 12 ", 12.0), ("1.5", 1.5), ("0", 0.0), (formatdate(NOW + 30, usegmt=True), 30.0)],
)
def test_delta_seconds_and_http_dates_are_read(value: str, seconds: float) -> None:
    assert parse_retry_after(value, cap=3600, now=NOW) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "\u00b2", "\u0663", "1e3", "nan", "inf", "9" * 40])
def test_anything_else_is_no_hint_and_never_an_exception(value: str | None) -> None:
    assert parse_retry_after(value, cap=3600, now=NOW) is None


def test_the_caller_caps_how_long_a_server_may_make_us_wait() -> None:
    assert parse_retry_after("3600", cap=60, now=NOW) == 60
    assert parse_retry_after(formatdate(NOW + 86_400, usegmt=True), cap=60, now=NOW) == 60
    assert parse_retry_after(formatdate(NOW - 86_400, usegmt=True), cap=60, now=NOW) == 0


def test_backoff_doubles_from_the_base_up_to_the_cap_and_honours_the_servers_floor() -> None:
    assert [backoff_seconds(n, base=1, cap=5, jitter=1.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert backoff_seconds(1, base=1, cap=5, jitter=0.5, retry_after=9) == 9
