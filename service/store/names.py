"""Every Redis key and channel the service uses, named here and nowhere else.

Python builds names with the functions below; the Lua scripts get the same prefixes through
``LUA_NAMES`` (``service.store.lua`` substitutes them), so a name can never be spelled two ways.
arq's own keys are listed too: our scripts write its queue entries and abort marks, and
``tests/store/test_names.py`` pins them to ``arq.constants`` (the API process must not import arq).
"""

from __future__ import annotations

# --- jobs ----------------------------------------------------------------------------------------
JOB_PREFIX = "rs:job:"  # a job's record (hash); ':events', ':answer', ':calls' below
EVENTS_SUFFIX = ":events"
ANSWER_SUFFIX = ":answer"
CALLS_SUFFIX = ":calls"  # the job's call ledger: every paid model call, its tokens and outcome
LIVE_INDEX = "rs:live"  # jobs not finished yet, by when the reaper last found them well (or changed)
TO_COMPACT = "rs:to-compact"  # finished jobs whose event streams still hold every event
QUEUED_COUNTS = "rs:queued"  # jobs waiting, per plan
RUNNING_COUNTS = "rs:running"  # jobs running, per plan
WAKE_CHANNEL = "rs:wake"  # pub/sub: a job was submitted, unparked or cancelled

# --- per user --------------------------------------------------------------------------------------
USAGE_PREFIX = "rs:usage:"  # + user + ':' + period: tokens, reports and budget reservations
RATE_PREFIX = "rs:rate:"  # + user: the submission token bucket
ACTIVE_PREFIX = "rs:active:"  # + user: running jobs by lease deadline (the per-user cap)
PARKED_PREFIX = "rs:parked:"  # + user: jobs waiting for one of the user's slots
# + user + ':completed' / ':ended': finished jobs by expiry, for retention caps; + ':jobs': all of
# the user's jobs by creation time, for their listing.
USER_PREFIX = "rs:user:"
STREAM_LEASES_PREFIX = "rs:streams:"  # + user: open event streams by lease expiry, across the fleet
UPLOADS_PREFIX = "rs:uploads:"  # + user: the upload token bucket and the bytes stored
UPLOAD_SIZES_PREFIX = "rs:upload-sizes:"  # + user: stored uploads ('<id>:<bytes>') by expiry

# --- keys, uploads, secrets ------------------------------------------------------------------------
API_KEY_PREFIX = "rs:apikey:"  # + SHA-256 of the key
API_KEYS_INDEX = "rs:apikeys"  # key id -> digest, for listing and revoking without the key itself
UPLOAD_PREFIX = "rs:input:"  # + input id: an upload's owner and type (the bytes live in storage)
SIGNING_KEY_NAME = "rs:signing-secret"  # the events-token signing secret, when not configured

# --- completion webhooks ----------------------------------------------------------------------------
# Deliveries to make, by when their next attempt is due (while one runs: when its worker's lease ends).
WEBHOOKS_DUE = "rs:webhooks:due"
# Jobs with a callback URL whose delivery is not scheduled yet, by when they were last looked at: the
# safety net that finds an ended job whose delivery was never scheduled (see service.store.webhooks).
WEBHOOKS_WATCH = "rs:webhooks:watch"
WEBHOOK_PREFIX = "rs:webhook:"  # + job id: a pending delivery (url, message, attempts, lease)
# + user: the user's signing secret, "whsec_..." (service.store.webhook_secrets says how it is kept)
WEBHOOK_SECRET_PREFIX = "rs:webhook-secret:"  # noqa: S105 - a key's name, not a secret

# --- the fleet's shared state ----------------------------------------------------------------------
LLM_BUCKETS_PREFIX = "rs:llm:"  # + model + ':buckets': the shared limiter's buckets and pause
METRICS_COUNTERS = "rs:metrics:counters"
METRICS_GAUGES_PREFIX = "rs:metrics:gauges:"  # + instance
FANOUT_PREFIX = "rs:fanout:"  # + token + ':wake': one API process's events-reader wake-up stream

# --- arq's own (arq.constants) ---------------------------------------------------------------------
ARQ_QUEUE = "arq:queue"
ARQ_JOB_PREFIX = "arq:job:"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"
ARQ_RESULT_PREFIX = "arq:result:"
ARQ_RETRY_PREFIX = "arq:retry:"
ARQ_ABORT = "arq:abort"


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def job_events(job_id: str) -> str:
    return JOB_PREFIX + job_id + EVENTS_SUFFIX


def job_answer(job_id: str) -> str:
    return JOB_PREFIX + job_id + ANSWER_SUFFIX


def job_calls(job_id: str) -> str:
    return JOB_PREFIX + job_id + CALLS_SUFFIX


def user_finished(user_id: str, kind: str) -> str:
    """The user's finished jobs of a kind (``completed``, or ``ended``: failed and cancelled)."""
    return f"{USER_PREFIX}{user_id}:{kind}"


def usage(user_id: str, period: str) -> str:
    return f"{USAGE_PREFIX}{user_id}:{period}"


def stream_leases(user_id: str) -> str:
    return STREAM_LEASES_PREFIX + user_id


def uploads(user_id: str) -> str:
    return UPLOADS_PREFIX + user_id


def upload_sizes(user_id: str) -> str:
    return UPLOAD_SIZES_PREFIX + user_id


def api_key(digest: str) -> str:
    return API_KEY_PREFIX + digest


def upload(input_id: str) -> str:
    return UPLOAD_PREFIX + input_id


def llm_buckets(model: str) -> str:
    # One key per model holds all its state, so every limiter script touches one key.
    return f"{LLM_BUCKETS_PREFIX}{model}:buckets"


def metrics_gauges(instance: str) -> str:
    return METRICS_GAUGES_PREFIX + instance


def fanout_wake(token: str) -> str:
    return f"{FANOUT_PREFIX}{token}:wake"


def webhook(job_id: str) -> str:
    return WEBHOOK_PREFIX + job_id


def webhook_secret(user_id: str) -> str:
    return WEBHOOK_SECRET_PREFIX + user_id


def arq_job(job_id: str) -> str:
    return ARQ_JOB_PREFIX + job_id


# What the Lua scripts know by these placeholders (``@NAME@`` in their source).
LUA_NAMES = {
    "JOB_PREFIX": JOB_PREFIX,
    "EVENTS_SUFFIX": EVENTS_SUFFIX,
    "ANSWER_SUFFIX": ANSWER_SUFFIX,
    "CALLS_SUFFIX": CALLS_SUFFIX,
    "TO_COMPACT": TO_COMPACT,
    "LIVE_INDEX": LIVE_INDEX,
    "USER_PREFIX": USER_PREFIX,
    "QUEUED_COUNTS": QUEUED_COUNTS,
    "RUNNING_COUNTS": RUNNING_COUNTS,
    "WAKE_CHANNEL": WAKE_CHANNEL,
    "USAGE_PREFIX": USAGE_PREFIX,
    "RATE_PREFIX": RATE_PREFIX,
    "ACTIVE_PREFIX": ACTIVE_PREFIX,
    "PARKED_PREFIX": PARKED_PREFIX,
    "ARQ_QUEUE": ARQ_QUEUE,
    "ARQ_JOB_PREFIX": ARQ_JOB_PREFIX,
    "ARQ_ABORT": ARQ_ABORT,
    # For the job-ending scripts' one line that schedules a job's webhook (see service.store.webhooks).
    "WEBHOOKS_DUE": WEBHOOKS_DUE,
}
