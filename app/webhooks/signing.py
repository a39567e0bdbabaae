"""Webhook secrets (`whsec_…`, encrypted at rest) and Standard Webhooks signatures."""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook as StandardWebhook

from app.core.encryption import decrypt, encrypt

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
PURPOSE = "webhook-secret"


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64 (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def seal(secret_key: bytes, secret: str) -> bytes:
    """The secret encrypted for storage (CHECKLIST 48)."""
    return encrypt(secret_key, secret.encode(), purpose=PURPOSE)


@functools.lru_cache(maxsize=1024)
def unseal(secret_key: bytes, sealed: bytes) -> str:
    """The stored secret in clear (remembered: the dispatcher signs every batch with it, and a
    sealed token is never reused for another secret)."""
    return decrypt(secret_key, sealed, purpose=PURPOSE).decode()


def signature_headers(
    secrets_in_use: Sequence[str], *, message_id: str, timestamp: datetime, body: str
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` for a body.

    During a rotation both the new and the previous secret sign, space-separated, so that a
    receiver still holding the old secret keeps verifying (Standard Webhooks, "Signature")."""
    signatures = [
        StandardWebhook(secret).sign(message_id, timestamp, body) for secret in secrets_in_use
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
