"""What a provider says about its rate limits on a response: for requests, input tokens and output
tokens, the limit, what remains and when the bucket is full again. Vendor-free, so the provider
adapter can hand it up and the shared limiter (``service.store.limiter.LlmLimiter.fold``) can take it,
neither knowing the other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LimitReading:
    limit: int
    remaining: int
    reset_in: float  # seconds from ``ProviderLimits.read_at`` until the provider's bucket is full again


@dataclass(frozen=True)
class ProviderLimits:
    """One response's readings (a limit the response did not mention is None)."""

    requests: LimitReading | None
    input_tokens: LimitReading | None
    output_tokens: LimitReading | None
    read_at: float  # ``time.monotonic()`` when the response's headers were read

    def readings(self) -> tuple[LimitReading | None, LimitReading | None, LimitReading | None]:
        """In the limiter's bucket order: requests, input tokens, output tokens."""
        return self.requests, self.input_tokens, self.output_tokens
