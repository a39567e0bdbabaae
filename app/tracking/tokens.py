"""The tokens in tracking and unsubscribe links: opaque, unforgeable, bound to one recipient.

A token is the AES-SIV encryption (RFC 5297) of what the endpoint needs to write its event
(account, message, recipient, address, unsubscribe group and, for a click, the original URL),
with a key derived from COLUMBA_SECRET_KEY. SIV is deterministic, so a retry renders the same
bytes (CHECKLIST 26), and authenticated, so a token that was forged, altered or moved to
another recipient or URL does not decrypt: the endpoints answer 404 without a lookup, and a
click can never redirect anywhere its sender did not link to (no open redirect).

The mailto: of List-Unsubscribe cannot hold such a token (RFC 5321 §4.5.3.1.1: a local part
is at most 64 octets), so it names the recipient with an HMAC, as VERP return paths do, and
`columba inbound` looks the rest up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.core import ids

VERSION = 1
_HEADER = struct.Struct(">BB16s16s16sIB")  # version, kind, account, message, recipient, group, len
_ASSOCIATED = [b"columba-tracking"]
UNSUBSCRIBE_PREFIX = "unsubscribe+"
MAILTO_MAC_LENGTH = 16  # base32 characters: 80 bits
MAX_EMAIL_BYTES = 255  # the length byte; longer addresses get no tracking links

# Paths under COLUMBA_PUBLIC_URL (app.tracking.router serves them).
OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"
UNSUBSCRIBE_PATH = "/u/"


class Kind(IntEnum):
    """What a token's link does."""

    OPEN = 1  # the pixel
    CLICK = 2  # a rewritten link: carries the URL
    UNSUBSCRIBE = 3  # the message's group, or everything when it has none (List-Unsubscribe)
    GLOBAL_UNSUBSCRIBE = 4  # <%asm_global_unsubscribe_raw_url%>: every mail of the account
    PREFERENCES = 5  # <%asm_preferences_raw_url%>: the page of groups


class InvalidToken(ValueError):
    """Not a token of ours: forged, altered, truncated or made with another key."""


@dataclass(frozen=True, slots=True)
class TrackedRecipient:
    """Whom a link belongs to: what its event is written with, without a lookup."""

    account_id: str
    message_id: str
    recipient_id: str
    email: str
    group_id: int | None = None  # the message's unsubscribe group (asm.group_id)


@dataclass(frozen=True, slots=True)
class Token:
    """A decrypted token."""

    kind: Kind
    recipient: TrackedRecipient
    url: str | None = None  # CLICK only


@lru_cache(maxsize=4)
def _cipher(secret_key: bytes) -> AESSIV:
    """AES-256-SIV with a key for tracking tokens only, derived from the secret key."""
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"tracking-token").derive(
        secret_key
    )
    return AESSIV(key)


@lru_cache(maxsize=4096)
def _id_bytes(text: str) -> bytes:
    """An id as 16 bytes; cached, because a copy seals many tokens for one recipient."""
    return ids.decode(text).to_bytes(16, "big")


def seal(token: Token, *, secret_key: bytes) -> str:
    """The token as URL-safe text (base64url, no padding)."""
    recipient = token.recipient
    email = recipient.email.encode()
    if len(email) > MAX_EMAIL_BYTES:
        raise ValueError("the address is too long for a tracking token")
    header = _HEADER.pack(
        VERSION,
        token.kind,
        _id_bytes(recipient.account_id),
        _id_bytes(recipient.message_id),
        _id_bytes(recipient.recipient_id),
        recipient.group_id or 0,
        len(email),
    )
    url = (token.url or "").encode() if token.kind is Kind.CLICK else b""
    sealed = _cipher(secret_key).encrypt(header + email + url, _ASSOCIATED)
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def unseal(text: str, *, secret_key: bytes) -> Token:
    """The token `text` encrypts; InvalidToken unless it is intact and ours."""
    try:
        sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        plain = _cipher(secret_key).decrypt(sealed, _ASSOCIATED)
        version, kind, account, message, recipient, group, length = _HEADER.unpack_from(plain)
        rest = plain[_HEADER.size :]
        email, url = rest[:length].decode(), rest[length:].decode()
        token_kind = Kind(kind)
    except (InvalidTag, ValueError, binascii.Error, struct.error, UnicodeDecodeError) as exc:
        raise InvalidToken("not a valid token") from exc
    if version != VERSION or len(email) == 0:
        raise InvalidToken("not a valid token")
    tracked = TrackedRecipient(
        account_id=ids.encode(int.from_bytes(account, "big")),
        message_id=ids.encode(int.from_bytes(message, "big")),
        recipient_id=ids.encode(int.from_bytes(recipient, "big")),
        email=email,
        group_id=group or None,
    )
    return Token(token_kind, tracked, url if token_kind is Kind.CLICK else None)


def link(public_url: str, token: Token, *, secret_key: bytes) -> str:
    """The absolute URL of a token's endpoint."""
    path = {Kind.OPEN: OPEN_PATH, Kind.CLICK: CLICK_PATH}.get(token.kind, UNSUBSCRIBE_PATH)
    return public_url.rstrip("/") + path + seal(token, secret_key=secret_key)


@lru_cache(maxsize=4)
def _mailto_key(secret_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"unsubscribe-mailto").derive(
        secret_key
    )


def _mailto_mac(secret_key: bytes, recipient_id: str, domain: str) -> str:
    digest = hmac.new(
        _mailto_key(secret_key), f"{recipient_id}@{domain}".encode(), hashlib.sha256
    ).digest()
    return base64.b32encode(digest).decode()[:MAILTO_MAC_LENGTH].lower()


def mailto_address(recipient_id: str, bounce_domain: str, *, secret_key: bytes) -> str:
    """`unsubscribe+<recipient>-<mac>@<bounce domain>`: a mail to it unsubscribes the
    recipient (RFC 2369 §3.2; RFC 8058 keeps the mailto: beside the one-click URI)."""
    domain = bounce_domain.lower()
    mac = _mailto_mac(secret_key, recipient_id.upper(), domain)
    return f"{UNSUBSCRIBE_PREFIX}{recipient_id.lower()}-{mac}@{domain}"


def parse_mailto_address(address: str, *, secret_key: bytes) -> str | None:
    """The recipient id an unsubscribe address names, or None when it is not a valid one
    (local parts compared case-insensitively: some MTAs change their case)."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    lowered, domain = local.lower(), domain.lower().rstrip(".")
    if not at or not lowered.startswith(UNSUBSCRIBE_PREFIX):
        return None
    recipient_id, dash, mac = lowered[len(UNSUBSCRIBE_PREFIX) :].partition("-")
    if not dash or len(recipient_id) != 26 or len(mac) != MAILTO_MAC_LENGTH:
        return None
    expected = _mailto_mac(secret_key, recipient_id.upper(), domain)
    return recipient_id.upper() if hmac.compare_digest(expected, mac) else None
