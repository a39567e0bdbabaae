"""DKIM signing (RFC 6376, RFC 8463): deterministic, with the private-key operation in OpenSSL.

dkimpy supplies canonicalisation, header selection and folding, but its `dkim.sign` cannot be used
as is: it stamps `t=` with the current time (retries must produce the identical signature,
CHECKLIST 26) and does RSA in pure Python (8-20 ms against ~0.5 ms in OpenSSL).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import dkim
import idna
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

__all__ = [
    "DkimKey",
    "DkimSigner",
    "generate_ed25519_key",
    "generate_rsa_key",
    "public_key_record",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
_PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# CHECKLIST 33 requires RSA keys of at least 2048 bits (RFC 8301 §3.2 only requires 1024).
MIN_RSA_BITS = 2048
# Header fields covered when present (RFC 6376 §5.4.1 recommendations plus RFC 8058 §3.1, which
# requires List-Unsubscribe and List-Unsubscribe-Post to be signed, and Gmail's Feedback-ID).
SIGNED_HEADERS = frozenset(
    {
        b"from",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"feedback-id",
        b"in-reply-to",
        b"references",
    }
)
_RELAXED = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_HEADER_NAME = b"DKIM-Signature"
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
# Placeholder as long as a real RSA-2048 b= value, so folding before b= does not move when the
# signature is filled in (the same trick as dkimpy's gen_header).
_B_PLACEHOLDER = b"0" * 60


@dataclass(frozen=True)
class DkimKey:
    """A signing key for one domain and selector; the PEM is parsed once, at construction."""

    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)  # never in logs (CHECKLIST 48)
    algorithm: Algorithm = "rsa-sha256"
    private_key: _PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Load and check the private key so that a bad key fails here, not at send time."""
        key = _load_private_key(self.private_key_pem)
        _check_key_matches(key, self.algorithm)
        object.__setattr__(self, "private_key", key)


class DkimSigner:
    """Signs messages with one key, or two (RSA and Ed25519 dual signing, RFC 8463 §1)."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        """Keep the keys in order; each produces one DKIM-Signature field."""
        if not keys:
            raise ValueError("DkimSigner needs at least one key")
        self._keys = tuple(keys)

    def sign(self, message: bytes, *, timestamp: int) -> bytes:
        """Return the DKIM-Signature field(s), folded and CRLF-terminated, to prepend to message."""
        raw_headers, body = _split_message(message)
        headers = _RELAXED.canonicalize_headers(raw_headers)
        include = _headers_to_sign(raw_headers)
        body_hash = _body_hash(body)
        return b"".join(
            _signature_field(key, headers, include, body_hash, timestamp) for key in self._keys
        )


# --- keys ------------------------------------------------------------------------------------


def generate_rsa_key() -> bytes:
    """Return a new 2048-bit RSA private key as unencrypted PKCS#8 PEM."""
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def generate_ed25519_key() -> bytes:
    """Return a new Ed25519 private key as unencrypted PKCS#8 PEM."""
    return _pem(ed25519.Ed25519PrivateKey.generate())


def public_key_record(private_key_pem: bytes) -> str:
    """Return the DNS TXT value publishing the public half (RFC 6376 §3.6.1, RFC 8463 §4.2)."""
    public = _load_private_key(private_key_pem).public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        # RFC 8463 §4.2: p= is the raw 32-byte key, not a SubjectPublicKeyInfo.
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def _pem(key: _PrivateKey) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_private_key(pem: bytes) -> _PrivateKey:
    """Parse a PEM private key, accepting only RSA and Ed25519."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported DKIM key type: {type(key).__name__}")
    return key


def _check_key_matches(key: _PrivateKey, algorithm: Algorithm) -> None:
    """Refuse a key that does not fit its declared algorithm or is too short."""
    if algorithm == "ed25519-sha256":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("algorithm ed25519-sha256 needs an Ed25519 key")
        return
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("algorithm rsa-sha256 needs an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} required")


# --- message parsing -------------------------------------------------------------------------


def _split_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """Split into dkimpy's (name, value) header list and the CRLF body, parsing headers only."""
    end = _HEADER_END.search(message)
    if end is None:
        head, body = message, b""
    else:
        head, body = message[: end.start()], message[end.end() :]
    headers, _ = dkim.rfc822_parse(head + b"\r\n\r\n")
    # Verifiers read the body with lines ending in CRLF (RFC 6376 §3.4.3 works on CRLF lines);
    # rendered messages already are, so this only costs a scan.
    if body.count(b"\n") != body.count(b"\r\n"):  # two C scans, cheaper than the regex
        body = _BARE_LF.sub(b"\r\n", body)
    return cast(list[list[bytes]], headers), body


def _headers_to_sign(headers: list[list[bytes]]) -> list[bytes]:
    """List present signable fields in message order, plus one extra "from" (RFC 6376 §8.15)."""
    names = [name.lower() for name, _ in headers if name.lower() in SIGNED_HEADERS]
    if b"from" not in names:
        raise ValueError("message has no From header field, which DKIM must sign")
    # Naming "from" once more than it occurs makes any added From break the signature.
    return [*names, b"from"]


# --- body hash -------------------------------------------------------------------------------


class _BodyHashCache:
    """A small thread-safe LRU of body hashes keyed by the SHA-256 of the raw body."""

    def __init__(self, maxsize: int) -> None:
        """Create an empty cache holding at most `maxsize` entries."""
        self._maxsize = maxsize
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> bytes | None:
        """Return the cached value and mark it recently used, or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return value

    def clear(self) -> None:
        """Forget every entry (benchmarks use it to measure the uncached cost)."""
        with self._lock:
            self._entries.clear()

    def put(self, key: bytes, value: bytes) -> None:
        """Store a value, evicting the least recently used entry when full."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)


# Many recipients of one content share a body: canonicalise and hash it once.
BODY_HASH_CACHE = _BodyHashCache(maxsize=256)


def _body_hash(body: bytes) -> bytes:
    """Return base64(SHA-256(relaxed canonical body)) for bh= (RFC 6376 §3.7), cached."""
    # Hashing the raw body is much cheaper than the four regex passes of canonicalisation.
    key = hashlib.sha256(body).digest()
    cached = BODY_HASH_CACHE.get(key)
    if cached is None:
        canonical = cast(bytes, _RELAXED.canonicalize_body(body))
        cached = base64.b64encode(hashlib.sha256(canonical).digest())
        BODY_HASH_CACHE.put(key, cached)
    return cached


# --- signature -------------------------------------------------------------------------------


def _signature_field(
    key: DkimKey,
    headers: list[tuple[bytes, bytes]],
    include: list[bytes],
    body_hash: bytes,
    timestamp: int,
) -> bytes:
    """Build one complete, folded `DKIM-Signature: ...\\r\\n` field for `key`."""
    fields = _tags(key, include, body_hash, timestamp)
    digest = _header_hash(headers, include, _fold(fields))
    fields[-1] = (b"b", base64.b64encode(_sign_digest(key.private_key, digest)))
    # Folded with its CRLF included, as dkimpy's gen_header does, so output matches dkimpy's.
    return _HEADER_NAME + b": " + _fold(fields, end=b"\r\n")


def _tags(
    key: DkimKey, include: list[bytes], body_hash: bytes, timestamp: int
) -> list[tuple[bytes, bytes]]:
    """Return the tag list in dkimpy's order, with b= as a placeholder (RFC 6376 §3.5)."""
    domain = _ascii_name(key.domain)
    return [
        (b"v", b"1"),
        (b"a", key.algorithm.encode("ascii")),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", _ascii_name(key.selector)),
        # t= is the accept time handed in, never the clock, so a retry signs identically.
        (b"t", str(timestamp).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", _B_PLACEHOLDER),
    ]


def _ascii_name(name: str) -> bytes:
    """Return a d=/s= domain name in A-label form (RFC 6376 §3.5: ASCII domain names)."""
    if name.isascii():
        return name.encode("ascii")
    return idna.encode(name, uts46=True)


def _fold(fields: list[tuple[bytes, bytes]], end: bytes = b"") -> bytes:
    """Join tags as `t=v; ...` (+ `end`) and fold them with dkimpy's folding at column 72."""
    value = b"; ".join(b"=".join(tag) for tag in fields) + end
    return cast(bytes, dkim.fold(value, namelen=len(_HEADER_NAME), linesep=b"\r\n"))


def _header_hash(
    headers: list[tuple[bytes, bytes]], include: list[bytes], unsigned: bytes
) -> bytes:
    """SHA-256 over the canonical signed headers and this field with an empty b= (§3.7)."""
    hasher = dkim.HashThrough(hashlib.sha256())
    # hash_headers strips the b= value itself (RE_BTAG) and drops the field's trailing CRLF.
    dkim.hash_headers(hasher, _RELAXED, headers, include, (_HEADER_NAME, b" " + unsigned), {})
    return cast(bytes, hasher.digest())


def _sign_digest(private_key: _PrivateKey, digest: bytes) -> bytes:
    """Sign the header digest: RSASSA-PKCS1-v1_5 (RFC 8017 §8.2) or Ed25519 (RFC 8463 §3)."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # RFC 8463 §3: Ed25519 signs the SHA-256 digest of the canonical headers, not the data.
        return private_key.sign(digest)
    # Prehashed makes OpenSSL add the SHA-256 DigestInfo, exactly as dkimpy's
    # EMSA_PKCS1_v1_5_encode does before its pure-Python modular exponentiation.
    return private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
