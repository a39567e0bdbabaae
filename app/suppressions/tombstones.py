"""Tombstones: what an erased address leaves on the suppression lists.

`DELETE /v1/addresses/{email}` removes an address everywhere, but a person who complained or
unsubscribed must not start receiving mail again because the proof of it was erased. So each
suppression (and group opt-out) of the address stays, its address replaced by a keyed hash:
HMAC-SHA256 under a key derived from COLUMBA_SECRET_KEY. A later send to the address hashes
it the same way and is dropped; the database alone (a dump, a backup) does not tell which
address it was, because guessing needs the secret key. Rotating the secret key forgets them.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

PREFIX = "erased:"
_PURPOSE = b"columba suppression tombstone v1"


@lru_cache(maxsize=8)
def tombstone_key(secret_key: bytes) -> bytes:
    """The HMAC key of tombstones, derived so that it is used for nothing else."""
    return hmac.new(secret_key, _PURPOSE, hashlib.sha256).digest()


def tombstone_of(email_key: str, key: bytes) -> str:
    """The tombstone of a lower-cased address (`suppression_key`): `erased:<hex>`."""
    digest = hmac.new(key, email_key.encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest


def tombstones_of(email_keys: list[str], key: bytes) -> dict[str, str]:
    """Tombstone → address for each address; empty without a key (nothing was erased with
    one, e.g. in tests that build an accept policy by hand)."""
    if not key:
        return {}
    return {tombstone_of(email, key): email for email in email_keys}
