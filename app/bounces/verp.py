"""VERP return paths: `bounces+<token>@<bounce-domain>`, the token naming one recipient.

A bounce comes back to the envelope sender (RFC 5321 §4.5.5), so MAIL FROM names the
recipient that leads the transaction. The token is the recipient id and an HMAC of it and the
bounce domain (the key derived from COLUMBA_SECRET_KEY), so a forged or altered address is
refused before anything is looked up (CHECKLIST 43)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LOCAL_PREFIX = "bounces+"
MAC_LENGTH = 16  # base32 characters: 80 bits
ID_LENGTH = 26


class InvalidVerpAddress(ValueError):
    """Not a VERP address of ours, or its HMAC does not match."""


@dataclass(frozen=True, slots=True)
class VerpAddress:
    """A verified VERP address: whose bounces it receives, on which bounce domain."""

    recipient_id: str
    domain: str


@lru_cache(maxsize=4)
def verp_key(secret_key: bytes) -> bytes:
    """A key for VERP tokens only, derived from the secret key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"verp-token").derive(
        secret_key
    )


def _mac(key: bytes, recipient_id: str, domain: str) -> str:
    """The HMAC of recipient and domain, as 16 lower-case base32 characters."""
    digest = hmac.new(key, f"{recipient_id}@{domain}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:MAC_LENGTH].lower()


def return_path(recipient_id: str, bounce_domain: str, *, secret_key: bytes) -> str:
    """The MAIL FROM address whose bounces name `recipient_id`."""
    domain = bounce_domain.lower()
    mac = _mac(verp_key(secret_key), recipient_id.upper(), domain)
    return f"{LOCAL_PREFIX}{recipient_id.lower()}-{mac}@{domain}"


def split_domain(address: str) -> tuple[str, str]:
    """(local part, lower-cased domain); InvalidVerpAddress without an @."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or not local or not domain:
        raise InvalidVerpAddress(f"{address!r} is not an address")
    return local, domain.lower().rstrip(".")


def parse(address: str, *, secret_key: bytes) -> VerpAddress:
    """The recipient a VERP address names, after checking its HMAC.

    Local parts are matched case-insensitively: some MTAs change their case."""
    local, domain = split_domain(address)
    lowered = local.lower()
    if not lowered.startswith(LOCAL_PREFIX):
        raise InvalidVerpAddress("not a bounce address")
    recipient_id, dash, mac = lowered[len(LOCAL_PREFIX) :].partition("-")
    if not dash or len(recipient_id) != ID_LENGTH or len(mac) != MAC_LENGTH:
        raise InvalidVerpAddress("malformed bounce address")
    expected = _mac(verp_key(secret_key), recipient_id.upper(), domain)
    if not hmac.compare_digest(expected, mac):
        raise InvalidVerpAddress("bounce address signature does not match")
    return VerpAddress(recipient_id=recipient_id.upper(), domain=domain)
