"""Every Redis key and channel the service uses, named here and nowhere else.

Python builds every name with the functions below and hands it to the scripts in KEYS; no script
builds one (``tests/store/test_names.py`` checks). The report queue is ours, not arq's: arq hosts
the worker process and runs its periodic jobs, and its own keys are its business.
"""

from __future__ import annotations

# --- jobs ----------------------------------------------------------------------------------------
# A job's record (hash): its fields, its saved model answer ('answer', while it is needed) and its
# call ledger (a 'call:<id>' field per paid model call: its tokens and outcome); ':events' below.
JOB_PREFIX = "rs:job:"
EVENTS_SUFFIX = ":events"
CALL_FIELD_PREFIX = "call:"
ANSWER_FIELD = "answer"
# The report queue: members '<job id>:<user id>', scored by when the job is due; a running job's
# score is the end of its lease, so a job whose worker died comes due again by itself.
QUEUE = "rs:queue"
# Idle workers block on this sorted set (BZPOPMIN): a script that makes work due sets its one member.
MARKER = "rs:marker"
QUEUED_COUNTS = "rs:queued"  # jobs waiting, per plan
RUNNING_COUNTS = "rs:running"  # jobs running, per plan
CANCEL_CHANNEL = "rs:cancel"  # pub/sub: the id of a running job that was cancelled (its worker stops it)
REPLAY_MS = 60_000  # a finished job's event stream is kept this long for readers catching up

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
# pub/sub: the id of a job whose webhook became due at its end (workers' delivery loops look at once)
WEBHOOKS_CHANNEL = "rs:webhooks:wake"
WEBHOOK_PREFIX = "rs:webhook:"  # + job id: a pending delivery (url, message, attempts, lease)
# + user: the user's signing secret, "whsec_..." (service.store.webhook_secrets says how it is kept)
WEBHOOK_SECRET_PREFIX = "rs:webhook-secret:"  # noqa: S105 - a key's name, not a secret

# --- the batch lane (service.store.batches) ----------------------------------------------------------
# Batch jobs prepared and waiting for the next provider batch: queue members by when they came.
BATCH_PENDING = "rs:batch:pending"
# The one batch about to be created (its custom ids, when): written before the create call, so a
# driver that dies mid-call is followed by one that finds the batch instead of sending it again.
BATCH_INTENT = "rs:batch:intent"
BATCH_OPEN = "rs:batch:open"  # provider batches being followed, by when each is next looked at
BATCH_KNOWN = "rs:batch:known"  # every batch recorded lately, by creation: never another intent's
BATCH_PREFIX = "rs:batch:"  # + batch id: its members (queue members) and how often it was polled
BATCH_DRIVER = "rs:batch:driver"  # the lease of the one worker that drives the fleet's batches
BATCH_REQUEST_SUFFIX = ":batch-request"  # rs:job:<id> + this: a prepared request until it is sent

# --- the fleet's shared state ----------------------------------------------------------------------
LLM_BUCKETS_PREFIX = "rs:llm:"  # + model + ':buckets': the shared limiter's buckets and pause
# + plan + ':' + model: the output tokens of recent answered calls (a hash of 64 slots, each answer
# replacing a random one), whose 95th percentile lets a call near the end of a budget run with its
# max_tokens cut to what is left
OUTPUT_SAMPLE_PREFIX = "rs:output-sample:"
METRICS_COUNTERS = "rs:metrics:counters"
METRICS_GAUGES_PREFIX = "rs:metrics:gauges:"  # + instance
FANOUT_PREFIX = "rs:fanout:"  # + token + ':wake': one API process's events-reader wake-up stream


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def job_events(job_id: str) -> str:
    return JOB_PREFIX + job_id + EVENTS_SUFFIX


def batch(batch_id: str) -> str:
    return BATCH_PREFIX + "b:" + batch_id


def batch_request(job_id: str) -> str:
    return JOB_PREFIX + job_id + BATCH_REQUEST_SUFFIX


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


def output_sample(model: str, plan: str) -> str:
    return f"{OUTPUT_SAMPLE_PREFIX}{plan}:{model}"


def metrics_gauges(instance: str) -> str:
    return METRICS_GAUGES_PREFIX + instance


def fanout_wake(token: str) -> str:
    return f"{FANOUT_PREFIX}{token}:wake"


def webhook(job_id: str) -> str:
    return WEBHOOK_PREFIX + job_id


def webhook_secret(user_id: str) -> str:
    return WEBHOOK_SECRET_PREFIX + user_id


def queue_member(job_id: str, user_id: str) -> str:
    """A job as the queue (and the live index, and a user's slot sets) know it: with its user, so
    the worker can name the user's keys before it reads the record."""
    return f"{job_id}:{user_id}"


def split_member(member: str) -> tuple[str, str]:
    job_id, _, user_id = member.partition(":")
    return job_id, user_id


def active(user_id: str) -> str:
    return ACTIVE_PREFIX + user_id


def parked(user_id: str) -> str:
    return PARKED_PREFIX + user_id


def rate_bucket(user_id: str) -> str:
    return RATE_PREFIX + user_id


# What the Lua scripts know by these placeholders (``@NAME@`` in their source): constants only.
LUA_NAMES = {
    "CANCEL_CHANNEL": CANCEL_CHANNEL,
    "REPLAY_MS": str(REPLAY_MS),
    "CALL_FIELD_PREFIX": CALL_FIELD_PREFIX,
    "ANSWER_FIELD": ANSWER_FIELD,
    "WEBHOOKS_CHANNEL": WEBHOOKS_CHANNEL,
}
