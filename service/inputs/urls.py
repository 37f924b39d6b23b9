"""Input URLs as the API checks them: syntax, scheme, credentials, and literal private addresses.

No DNS and no HTTP library here (the API process loads neither): names that resolve to private
addresses are refused by the fetcher when it connects, which is the check that counts.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from service.inputs.addresses import AddressPolicy, literal_address

MAX_URL_LENGTH = 2048
PRIVATE_ADDRESS = (
    "the input URL {} a private or local address, which is not allowed; use a publicly reachable URL"
)


def check_input_url(url: str, *, allow_private: bool = False) -> str:
    """The URL, stripped, if a job may use it; ``ValueError`` with a reason the user can act on if not.

    Syntax only, no DNS (the API answers in milliseconds): literal addresses, including the numeric
    forms the resolver accepts, and ``localhost`` names are refused here; names that resolve to private
    addresses are refused by the fetcher at connect time, which is the check that counts.

    It splits the URL with the standard library, several times faster than httpx's parser on the
    API's hot path. That is safe because this check is advice, not the guard: the fetcher parses
    with httpx, re-checks everything, and refuses private addresses when it connects.
    """
    host = _split_url(url)
    literal = literal_address(host)
    if not allow_private:
        if literal is not None and not AddressPolicy().permits(literal):
            raise ValueError(PRIVATE_ADDRESS.format("points to"))
        if host == "localhost" or host.endswith(".localhost"):
            raise ValueError(PRIVATE_ADDRESS.format("points to"))
    elif literal is not None and not AddressPolicy(allow_private=True).permits(literal):
        raise ValueError("the input URL points to an address that is never allowed (metadata or broadcast)")
    return url.strip()


INVALID_URL = "the input URL is not a valid URL (check its host name and port)"
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def checked_url_text(url: str) -> str:
    candidate = url.strip()
    if not candidate:
        raise ValueError("the input URL is empty")
    if len(candidate) > MAX_URL_LENGTH:
        raise ValueError(f"the input URL is longer than {MAX_URL_LENGTH} characters")
    if _SPACE_OR_CONTROL.search(candidate):
        raise ValueError("the input URL contains spaces or control characters; percent-encode them")
    return candidate


# The usual input URL: http(s), a host of letters, digits, hyphens and dots, an optional port, then
# a path, query or fragment with no space or control character. Its host is read off directly,
# exactly as ``urlsplit`` reads it (tests/inputs/test_guard.py holds the two to the same answers);
# anything else (brackets, a user name, percent signs, an odd port) takes the long way.
_PLAIN_URL = re.compile(
    r"(?i:https?)://(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?)(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"(?:[/?#][^\s\x00-\x1f\x7f]*)?"
)


def _split_url(url: str) -> str:
    """The host of an acceptable http(s) URL, lower-cased and without a trailing dot."""
    plain = _PLAIN_URL.fullmatch(url) if len(url) <= MAX_URL_LENGTH else None
    if plain is not None and (plain["port"] is None or int(plain["port"]) <= 65535):
        return plain["host"].lower().rstrip(".")
    return _split_any_url(url)


def _split_any_url(url: str) -> str:
    try:
        parts = urlsplit(checked_url_text(url))
        port = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise ValueError(str(exc) if "input URL" in str(exc) else INVALID_URL) from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("the input URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("the input URL has no host name")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the input URL must not contain a user name or password (user:pass@...)")
    if port == 0:
        raise ValueError("the input URL's port must be between 1 and 65535")
    return parts.hostname.rstrip(".")
