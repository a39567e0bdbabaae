"""Encryption at rest (DKIM keys, webhook secrets) with a key derived from COLUMBA_SECRET_KEY."""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


@lru_cache(maxsize=8)
def _fernet(secret_key: bytes, purpose: bytes) -> Fernet:
    """A Fernet key per purpose, so one leaked derived key exposes one kind of secret only."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key)
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(secret_key: bytes, plaintext: bytes, *, purpose: str) -> bytes:
    """Authenticated encryption of `plaintext`."""
    return _fernet(secret_key, purpose.encode()).encrypt(plaintext)


def decrypt(secret_key: bytes, token: bytes, *, purpose: str) -> bytes:
    """The plaintext of `token`; raises InvalidToken when tampered with or the key is wrong."""
    return _fernet(secret_key, purpose.encode()).decrypt(token)
