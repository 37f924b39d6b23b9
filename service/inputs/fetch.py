"""Fetching a job's input URL safely: the one module that talks HTTP to user-chosen hosts (httpx)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore
import httpx

from service.core.errors import InputRejected, InputUnavailable
from service.core.retry import parse_retry_after
from service.core.settings import Settings
from service.inputs import text as input_text
from service.inputs.addresses import AddressPolicy
from service.inputs.guard import AddressRefused, GuardedBackend, HostNotFound, ResolutionFailed, Resolver
from service.inputs.urls import INVALID_URL, checked_url_text

USER_AGENT = "report-service/0.1 (input fetcher)"
_REDIRECTS = {301, 302, 303, 307, 308}
_TRANSIENT_4XX = {408, 425, 429}
# An input host's Retry-After defers the job at most this long: a host must not park a job for an
# hour, and the job's attempts and deadline stay ours to spend.
MAX_RETRY_AFTER_SECONDS = 60.0


def _parse_url(url: str) -> httpx.URL:
    """Parses with httpx itself, so this check and the request can never read a URL differently."""
    candidate = checked_url_text(url)
    try:
        parsed = httpx.URL(candidate)
    except httpx.InvalidURL as exc:
        # httpx's message can quote parts of the URL: not repeated, the URL may carry a token.
        raise ValueError(INVALID_URL) from exc
    if parsed.scheme not in ("http", "https"):
        raise ValueError("the input URL must start with http:// or https://")
    if not parsed.host:
        raise ValueError("the input URL has no host name")
    if parsed.userinfo:
        raise ValueError("the input URL must not contain a user name or password (user:pass@...)")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ValueError("the input URL's port must be between 1 and 65535")
    return parsed


@dataclass(frozen=True)
class FetchedInput:
    text: str  # BOM, else declared charset, else UTF-8, else Windows-1252 (see input_text.decode_text)
    content_type: str  # "text/csv" | "application/json" | "text/plain"
    name: str  # last path segment of the final URL (after redirects), or "input"
    size: int  # body bytes after undoing Content-Encoding, i.e. the bytes the text was decoded from


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool rebuilt around the guarded network backend.

    ``AsyncHTTPTransport`` (httpx 0.28) has no ``network_backend`` parameter but its httpcore pool does;
    swapping the pool keeps httpx's exception mapping and response streaming untouched.
    """

    def __init__(
        self, backend: GuardedBackend, *, verify: ssl.SSLContext | bool, limits: httpx.Limits
    ) -> None:
        ssl_context = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        )
        super().__init__(verify=ssl_context, limits=limits, retries=0)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx's transport changed shape; the input address guard cannot be installed")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def build_guarded_client(
    settings: Settings,
    *,
    timeout: httpx.Timeout,
    headers: dict[str, str],
    policy: AddressPolicy | None = None,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An httpx client that connects only where the address policy allows (the SSRF guard), for
    every request to a user-chosen URL: input fetches, and webhooks (``service.inputs.webhooks``).
    The caller owns it and closes it (``await client.aclose()``).

    ``policy``/``resolver``/``verify`` exist for tests and private deployments; by default the policy
    follows ``allow_private_input_urls`` and the system resolver and CA bundle are used.
    """
    if policy is None:
        policy = AddressPolicy(allow_private=settings.allow_private_input_urls)
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=10, keepalive_expiry=30)
    transport = _GuardedTransport(GuardedBackend(policy, resolver=resolver), verify=verify, limits=limits)
    return httpx.AsyncClient(
        transport=transport,
        # No proxies or .netrc from the environment: a proxy would connect for us, past the guard.
        trust_env=False,
        follow_redirects=False,  # followed by hand, each hop re-checked (webhooks: never)
        timeout=timeout,
        # A jar whose policy accepts no cookie: one job's cookies never reach another job's request.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers=headers,
    )


def build_input_client(
    settings: Settings,
    *,
    policy: AddressPolicy | None = None,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """The client for input fetches (see ``build_guarded_client``)."""
    timeout = httpx.Timeout(
        connect=settings.input_connect_timeout_seconds,
        read=settings.input_read_timeout_seconds,
        write=settings.input_read_timeout_seconds,
        pool=settings.input_connect_timeout_seconds,
    )
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "text/csv, application/json;q=0.9, text/plain;q=0.8, */*;q=0.1",
        "Accept-Encoding": "gzip",  # decoded by hand, bounded (input_text.BoundedDecoder)
    }
    return build_guarded_client(
        settings, timeout=timeout, headers=headers, policy=policy, resolver=resolver, verify=verify
    )


class InputFetcher:
    """Fetches one input URL into text, within the byte cap and an overall deadline.

    The client must come from ``build_input_client``: that is where the address guard lives.
    """

    def __init__(
        self, client: httpx.AsyncClient, settings: Settings, *, deadline_seconds: float | None = None
    ) -> None:
        self._client = client
        self._max_bytes = settings.input_max_bytes
        self._max_redirects = settings.input_max_redirects
        # Per-read timeouts cannot stop a server trickling one byte per second; this can.
        self._deadline = (
            deadline_seconds
            if deadline_seconds is not None
            else settings.input_connect_timeout_seconds + 2 * settings.input_read_timeout_seconds
        )

    async def fetch(self, url: str) -> FetchedInput:
        try:
            current = _parse_url(url)
        except ValueError as exc:
            raise InputRejected(str(exc)) from exc
        try:
            async with asyncio.timeout(self._deadline):
                return await self._follow(current)
        except TimeoutError as exc:
            raise InputUnavailable(
                f"the input host did not send the input within {self._deadline:g} seconds"
            ) from exc
        except (httpx.HTTPError, AddressRefused, HostNotFound, ResolutionFailed) as exc:
            raise _translate(exc) from exc

    async def _follow(self, url: httpx.URL) -> FetchedInput:
        for _ in range(self._max_redirects + 1):
            async with self._client.stream("GET", url) as response:
                target = _redirect_target(response)
                if target is None:
                    return await self._read(response)
            url = target
        raise InputRejected(f"the input URL redirected more than {self._max_redirects} times")

    async def _read(self, response: httpx.Response) -> FetchedInput:
        _raise_for_status(response)
        media_type, charset = input_text.parse_content_type(response.headers.get("content-type"))
        declared = input_text.declared_kind(media_type)  # before the body: no need to download an image
        body = await self._read_body(response)
        if not body.strip():
            raise InputRejected("the input URL returned an empty document")
        text = input_text.decode_text(body, charset)
        name = input_text.name_from_path(response.url.path)
        return FetchedInput(
            text=text, content_type=input_text.guess_kind(declared, name, text), name=name, size=len(body)
        )

    async def _read_body(self, response: httpx.Response) -> bytes:
        declared_length = response.headers.get("content-length", "")
        if declared_length.isdigit() and int(declared_length) > self._max_bytes:
            raise self._too_large()
        decoder = input_text.BoundedDecoder(response.headers.get("content-encoding"))
        body = bytearray()
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            body += decoder.feed(chunk, self._max_bytes - len(body) + 1)
            # Raw bytes are capped too: a body that does not decode must not stream on for ever.
            if len(body) > self._max_bytes or received > self._max_bytes:
                raise self._too_large()
        decoder.finish()
        return bytes(body)

    def _too_large(self) -> InputRejected:
        return InputRejected(f"the input is larger than the {input_text.human_size(self._max_bytes)} limit")


def _redirect_target(response: httpx.Response) -> httpx.URL | None:
    """The next URL to fetch when ``response`` redirects, re-checked; None when it does not redirect."""
    if response.status_code not in _REDIRECTS:
        return None
    location = response.headers.get("location")
    if not location:
        raise InputRejected(f"the input URL answered {_status(response)} without saying where to go")
    try:
        target = response.url.join(location)
        target = _parse_url(str(target))
    except (httpx.InvalidURL, ValueError) as exc:
        raise InputRejected(f"the input URL redirected to a URL that cannot be used: {exc}") from exc
    if response.url.scheme == "https" and target.scheme == "http":
        raise InputRejected("the input URL redirected from https to plain http, which is not allowed")
    return target


def _raise_for_status(response: httpx.Response) -> None:
    code = response.status_code
    if 200 <= code < 300:
        return
    if code >= 500 or code in _TRANSIENT_4XX:
        raise InputUnavailable(
            f"the input host answered {_status(response)}; try again later",
            retry_after=parse_retry_after(response.headers.get("retry-after"), cap=MAX_RETRY_AFTER_SECONDS),
        )
    raise InputRejected(f"the input URL answered {_status(response)}")


def _status(response: httpx.Response) -> str:
    # The standard phrase, never the server's own reason text: that is arbitrary remote input.
    phrase = httpx.codes.get_reason_phrase(response.status_code)
    return f"{response.status_code} {phrase}".strip()


# A host refused by the address policy, one that does not resolve, and one that does not accept the
# connection all look the same to the user, retried alike: a different answer for each would let
# anyone map the private network's names from outside (which exist, which resolve privately).
UNREACHABLE_HOST = (
    "could not reach the input host (the URL must name a public host that is up and accepts connections)"
)


def _translate(exc: Exception) -> InputRejected | InputUnavailable:
    """Our error for a transport failure; reasons never include the URL (it may carry a token)."""
    if _caused_by(exc, ssl.SSLCertVerificationError):
        return InputRejected("the input host's TLS certificate could not be verified")
    if isinstance(exc, AddressRefused | HostNotFound | ResolutionFailed | httpx.ConnectError):
        return InputUnavailable(UNREACHABLE_HOST)
    if isinstance(exc, httpx.TimeoutException):
        return InputUnavailable("the input host did not answer in time")
    if isinstance(exc, httpx.TransportError):
        return InputUnavailable("the connection to the input host failed or was cut")
    return InputRejected("the input URL could not be fetched")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # httpx wraps httpcore wraps ssl: a short chain, bounded anyway
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
