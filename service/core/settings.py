"""Configuration: one Settings object, built only at entry points and passed down."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values people paste from examples; a signing secret like these would let anyone mint tokens.
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "dev", "development", "example", "test", "xxx"}
MIN_SECRET_LENGTH = 32
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
_S3_OPTIONAL = ("s3_endpoint_url", "s3_region", "s3_access_key_id", "s3_secret_access_key", "s3_prefix")


class Settings(BaseSettings):
    """Every knob the API, the worker and the CLI share. Names match the contract's table."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- the contract's variables -------------------------------------------------------------
    redis_url: str = "redis://localhost:6379/0"
    port: int = Field(default=8000, ge=1, le=65535)
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    worker_concurrency: int = Field(default=5, ge=1, le=10_000)
    worker_grace_seconds: float = Field(default=30, ge=0)
    # The longest an idle worker blocks on its wake-up before it looks at the queue unprompted (a dead
    # worker's job whose lease ran out is announced by no one).
    worker_idle_poll_seconds: float = Field(default=30, gt=0, le=300)
    loop_lag_report_seconds: float = Field(default=60, gt=0)
    job_timeout_seconds: float = Field(default=300, gt=0)
    llm_requests_per_minute: int = Field(default=30, ge=1)
    llm_input_tokens_per_minute: int = Field(default=30_000, ge=1)
    llm_output_tokens_per_minute: int = Field(default=8_000, ge=1)
    llm_limit_headroom: float = Field(default=0.97, gt=0.5, le=1.0)
    # Fold the provider's anthropic-ratelimit-* headers into the shared buckets (off: only our own
    # books, for an account no one else spends from, and the shared-account benchmark's baseline).
    llm_follow_provider_limits: bool = True
    allow_private_input_urls: bool = False
    # Origins a browser may call /api/* from, comma-separated ("https://app.example.com"), or "*"
    # for any (keys travel in a header, never in cookies). Empty: no cross-origin access.
    cors_allow_origins: str = ""

    # --- models -------------------------------------------------------------------------------
    model_pro: str = "claude-opus-4-7"
    model_free: str = "claude-haiku-4-5-20251001"
    max_output_tokens: int = Field(default=4000, ge=1, le=128_000)
    llm_timeout_seconds: float = Field(default=240, gt=0)
    # The system prompt is marked for the provider's prompt cache only when it is at least this long
    # (tokens, estimated on the high side): the model's minimum; shorter prefixes are never cached.
    prompt_cache_min_tokens: int = Field(default=1024, ge=0)  # Sonnet and Opus
    prompt_cache_min_tokens_haiku: int = Field(default=2048, ge=0)

    # --- inputs -------------------------------------------------------------------------------
    input_max_bytes: int = Field(default=2_000_000, ge=1)
    input_connect_timeout_seconds: float = Field(default=5, gt=0)
    input_read_timeout_seconds: float = Field(default=20, gt=0)
    input_max_redirects: int = Field(default=3, ge=0, le=10)
    input_retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    request_max_bytes: int = Field(default=16_384, ge=256)

    # --- storage and retention ----------------------------------------------------------------
    data_dir: Path = Path(".data")
    storage_dir: Path | None = None
    # S3-compatible object storage (S3, R2, Tigris, MinIO): used instead of STORAGE_DIR when
    # S3_BUCKET is set. Unset credentials and region fall back to the standard AWS chain.
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    pdf_url_ttl_seconds: int = Field(default=900, ge=0, le=7 * 24 * 3600)  # 0: pdfUrl stays the API's path
    report_retention_seconds: int = Field(default=24 * 3600, ge=60)
    report_retention_count: int = Field(default=10_000, ge=1)
    failed_retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    failed_retention_count: int = Field(default=1_000, ge=1)  # failed and cancelled jobs kept per user
    cancelled_queued_retention_seconds: int = Field(default=3600, ge=60)  # cancelled before it ran

    # --- scheduling and limits ---------------------------------------------------------------
    priority_pro_lead_seconds: float = Field(default=60, ge=0)
    user_max_active_free: int = Field(default=2, ge=0)
    user_max_active_pro: int = Field(default=5, ge=0)
    park_recheck_seconds: float = Field(default=120, gt=0)
    submissions_per_minute_free: int = Field(default=60, ge=0)
    submissions_per_minute_pro: int = Field(default=600, ge=0)
    budget_tokens_free: int = Field(default=1_000_000, ge=0)
    budget_tokens_pro: int = Field(default=20_000_000, ge=0)
    budget_period: Literal["month", "day"] = "month"
    budget_reserve_tokens: int = Field(default=0, ge=0)  # 0: the smallest call's worst case
    uploads_per_minute_free: int = Field(default=20, ge=0)  # POST /api/inputs per user (0: no limit)
    uploads_per_minute_pro: int = Field(default=120, ge=0)
    # Bytes of uploads one user may have stored at once; they free as uploads expire (0: no quota).
    upload_quota_bytes_free: int = Field(default=50_000_000, ge=0)
    upload_quota_bytes_pro: int = Field(default=1_000_000_000, ge=0)
    # CPU-bound steps run in processes killed at these deadlines (the attempt ends as timed_out)
    render_timeout_seconds: float = Field(default=60, gt=0)  # one PDF render, from when a process takes it
    summary_timeout_seconds: float = Field(default=60, gt=0)  # the offline provider's summary of an input

    # --- retries ------------------------------------------------------------------------------
    max_attempts: int = Field(default=3, ge=1, le=20)
    max_crash_restarts: int = Field(default=5, ge=0, le=100)
    # Answers cut after the 200 (an error event, a dropped connection) retried without spending an
    # attempt; past this many a cut spends one, so a provider that always cuts cannot bill forever.
    mid_answer_retries: int = Field(default=3, ge=0, le=20)
    retry_base_seconds: float = Field(default=5, ge=0)
    retry_max_seconds: float = Field(default=300, ge=0)

    # --- security -----------------------------------------------------------------------------
    signing_secret: SecretStr | None = None
    events_token_ttl_seconds: int = Field(default=3600, ge=60)
    auth_cache_seconds: float = Field(default=5, ge=0, le=300)
    # How long an API process remembers a key Redis did not know (or knew revoked): a client
    # retrying one bad key costs one Redis read per this many seconds. It can never let a key in.
    auth_unknown_cache_seconds: float = Field(default=5, ge=0, le=60)
    metrics_token: SecretStr | None = None  # GET /metrics needs "Authorization: Bearer <it>"; unset: off
    metrics_flush_seconds: float = Field(default=5, gt=0, le=60)

    # --- live events --------------------------------------------------------------------------
    events_ping_seconds: float = Field(default=15, gt=0, le=15)  # SSE comment so proxies keep it open
    events_max_streams_per_user: int = Field(default=20, ge=0)  # open at once, across the fleet (0: no cap)
    # A stream's lease in Redis, refreshed every third of it while open: how long a crashed API
    # process's streams still count against their users.
    events_stream_lease_seconds: float = Field(default=30, ge=1, le=600)

    # --- tracing (the standard OpenTelemetry names) ----------------------------------------------
    # Unset: no tracing, and nothing of OpenTelemetry's SDK is loaded. The base URL gets /v1/traces,
    # as the OpenTelemetry specification says; the traces endpoint is used as it is.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str | None = None  # unset: report-service-api / report-service-worker
    otel_sdk_disabled: bool = False

    # --- completion webhooks (callbackUrl) -----------------------------------------------------
    # One attempt's whole deadline (the specification recommends 15 to 30 s); a delivery is leased
    # to its worker for this plus a few seconds, so a worker that dies mid-delivery delays it no more.
    webhook_timeout_seconds: float = Field(default=15, gt=0, le=120)
    # A delivery still failing this long after its first attempt is given up (state "failed").
    webhook_give_up_seconds: float = Field(default=24 * 3600, gt=0, le=30 * 24 * 3600)
    # Backoff between attempts: from the base up to the max (a receiver's Retry-After is capped there).
    webhook_retry_base_seconds: float = Field(default=5, ge=0)
    webhook_retry_max_seconds: float = Field(default=3600, ge=0)
    # The longest a worker's delivery loop waits when nothing wakes it (a webhook due at a job's end,
    # and a retry whose time comes, wake it on time).
    webhook_poll_seconds: float = Field(default=30, gt=0, le=300)

    # --- the batch lane ("lane": "batch": the provider's Message Batches API, half price) ------------
    # Batch jobs are gathered this long (from the oldest waiting), or until this many wait, into one
    # provider batch (the provider's own cap is 100,000 requests or 256 MB a batch).
    batch_window_seconds: float = Field(default=60, gt=0, le=3600)
    batch_max_requests: int = Field(default=1000, ge=1, le=100_000)
    # How a sent batch is followed: first looked at after the min, then less and less often, up to
    # the max (one poller for the whole fleet).
    batch_poll_min_seconds: float = Field(default=10, gt=0, le=3600)
    batch_poll_max_seconds: float = Field(default=300, gt=0, le=3600)
    # A job whose batch expired (the provider's 24 h) is retried in the realtime lane, or failed.
    batch_expired: Literal["realtime", "fail"] = "realtime"
    # One worker drives the fleet's batches while it holds this lease (renewed every sixth of it);
    # when that worker dies, another takes over once the lease lapses.
    batch_driver_lease_seconds: float = Field(default=30, ge=1, le=600)

    # --- logging ------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in _split_origins(value):
            # A browser's Origin is scheme://host[:port], nothing more: "https://a.example/" (a
            # trailing slash) or a path would never match, silently refusing every request.
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"CORS_ALLOW_ORIGINS: {origin!r} is not an origin (scheme://host[:port], no path)"
                )
        return value

    @field_validator("signing_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.strip().lower() in _PLACEHOLDER_SECRETS or len(raw) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"SIGNING_SECRET must be a random string of at least {MIN_SECRET_LENGTH} characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))'); "
                "leave it unset to have one generated and shared through Redis"
            )
        return value

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _otlp_http_url(cls, value: str | None) -> str | None:
        # OTLP/HTTP only (the gRPC exporter is not installed): a bare host:port would fail at export.
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL (OTLP/HTTP)")
        return value or None

    @model_validator(mode="after")
    def _s3_complete(self) -> Settings:
        # A half-configured object store would silently fall back to local files on each host.
        given = [name for name in _S3_OPTIONAL if getattr(self, name)]
        if given and not self.s3_bucket:
            raise ValueError(f"S3_BUCKET is required when {', '.join(n.upper() for n in given)} is set")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY together (or neither)")
        if self.s3_endpoint_url and not self.s3_endpoint_url.startswith(("https://", "http://")):
            raise ValueError("S3_ENDPOINT_URL must start with https:// or http://")
        return self

    @property
    def storage_root(self) -> Path:
        """Local storage: PDFs under ``reports/``, uploaded inputs under ``inputs/``."""
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "files"

    @property
    def offline(self) -> bool:
        """Without an API key the offline provider writes reports, clearly marked as such."""
        return self.anthropic_api_key is None or not self.anthropic_api_key.get_secret_value()

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans are sent (OTLP/HTTP), or None: tracing is off."""
        if self.otel_sdk_disabled:
            return None
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return _split_origins(self.cors_allow_origins)

    def model_for(self, plan: str) -> str:
        return self.model_pro if plan == "pro" else self.model_free


def _split_origins(value: str) -> tuple[str, ...]:
    # Browsers send scheme and host in lower case: "https://App.example" would never match.
    return tuple(origin.strip().lower() for origin in value.split(",") if origin.strip())
