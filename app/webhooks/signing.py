"""Webhook secrets (`whsec_…`, encrypted at rest) and Standard Webhooks signatures; SendGrid's
ECDSA signatures for endpoints that asked for them."""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Sequence
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
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


# SendGrid's signed event webhook: ECDSA P-256 with SHA-256 over the timestamp followed by the
# body, the DER signature in base64; the public key is shown as base64 DER SubjectPublicKeyInfo
# (the PEM body that SendGrid's EventWebhook helpers wrap in BEGIN/END PUBLIC KEY lines).
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
ECDSA_PURPOSE = "webhook-ecdsa-key"


def new_ecdsa_key(secret_key: bytes) -> tuple[bytes, str]:
    """A fresh P-256 key: (private key sealed for storage, public key in base64 DER)."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sealed = encrypt(secret_key, pem, purpose=ECDSA_PURPOSE)
    return sealed, base64.b64encode(public).decode()


@functools.lru_cache(maxsize=1024)
def _ecdsa_key(secret_key: bytes, sealed: bytes) -> ec.EllipticCurvePrivateKey:
    """The stored key, decrypted and loaded once (the dispatcher signs every batch with it)."""
    key = serialization.load_pem_private_key(
        decrypt(secret_key, sealed, purpose=ECDSA_PURPOSE), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def sendgrid_headers(
    secret_key: bytes, sealed: bytes, *, timestamp: datetime, body: str
) -> dict[str, str]:
    """SendGrid's signature headers for a body."""
    stamp = str(int(timestamp.timestamp()))
    key = _ecdsa_key(secret_key, sealed)
    signature = key.sign((stamp + body).encode(), ec.ECDSA(hashes.SHA256()))
    return {SENDGRID_SIGNATURE: base64.b64encode(signature).decode(), SENDGRID_TIMESTAMP: stamp}
