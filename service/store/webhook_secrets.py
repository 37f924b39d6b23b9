"""Each user's webhook signing secret (Standard Webhooks' symmetric scheme): created on first use by
the API or a worker alike, the same ever after.

The secret is handed back to its owner (``GET /api/webhooks/secret``) and used by every worker to
sign, so it is kept as it is, not hashed: it lives only under its user's key in Redis
(``rs:webhook-secret:<user>``, no expiry), never in a job record, an event, a log line or a webhook.
Redis is the trust boundary here as for the rest of the service's state (whoever can read Redis can
read every job and the events-token secret too): give it a password, TLS (``rediss://``) and no
public address.
"""

from __future__ import annotations

import base64
import secrets

from service.store import names
from service.store.connection import RedisStore, translate_redis_errors

SECRET_PREFIX = "whsec_"  # noqa: S105 - the specification's marker of a symmetric secret
# The specification asks for 24 to 64 random bytes (192 to 512 bits); 32 is HMAC-SHA256's own size.
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


class WebhookSecrets(RedisStore):
    @translate_redis_errors
    async def secret_for(self, user_id: str) -> str:
        """The user's secret, created now if they have none (the first writer wins any race)."""
        key = names.webhook_secret(user_id)
        found: str | None = await self._redis.get(key)
        if found is None:
            await self._redis.set(key, new_secret(), nx=True)
            found = await self._redis.get(key)
        if found is None:  # only if someone deleted it between the two calls
            raise RuntimeError("the user's webhook secret vanished from Redis while it was created")
        return found
