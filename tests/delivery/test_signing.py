"""Tests for app.delivery.signing: DKIM signatures that dkimpy verifies, deterministically."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from collections.abc import Callable
from datetime import UTC, datetime

import dkim
import dkim.util
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from app.delivery import signing
from app.delivery.content import Address, MessageContent
from app.delivery.mime import render
from app.delivery.signing import (
    DkimKey,
    DkimSigner,
    generate_ed25519_key,
    generate_rsa_key,
    public_key_record,
)

TIMESTAMP = 1_795_880_765
HAS_NACL = importlib.util.find_spec("nacl") is not None
DnsFunc = Callable[..., bytes]

CONTENT = MessageContent(
    message_id="<0195f3c2-7d1e-7a4b-9c1d-2f6a8b9e0c11@mail.example.com>",
    date=datetime(2026, 11, 28, 15, 46, 5, tzinfo=UTC),
    sender=Address("noreply@example.com", "Example Shop"),
    subject="Your order #123 has shipped",
    to=(Address("alice@example.org", "Alice Example"),),
    text="Hello Alice,\n\n.Your order has shipped.\n",
    html="<p>Hello Alice,</p><p>Your order has shipped.</p>",
    headers=(
        ("List-Unsubscribe", "<https://example.com/u/abc>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Feedback-ID", "campaign:tenant:columba"),
        ("X-Not-Signed", "1"),
    ),
)


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    """One RSA-2048 key for the module (generation takes a while)."""
    return generate_rsa_key()


@pytest.fixture(scope="module")
def ed_pem() -> bytes:
    """One Ed25519 key for the module."""
    return generate_ed25519_key()


@pytest.fixture(scope="module")
def message() -> bytes:
    """A rendered text+html message with List-Unsubscribe and Feedback-ID."""
    return render(CONTENT)


def dns_for(*pems: bytes) -> DnsFunc:
    """A dkimpy dnsfunc serving s<i>._domainkey.example.com for each key in order."""
    records = {
        f"s{i}._domainkey.example.com.".encode(): public_key_record(pem).encode()
        for i, pem in enumerate(pems)
    }

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        """Return the TXT record for `name`."""
        return records[name]

    return lookup


def rsa_signer(pem: bytes) -> DkimSigner:
    """A signer with one RSA key, selector s0."""
    return DkimSigner([DkimKey("example.com", "s0", pem)])


def tags(signature: bytes, index: int = 0) -> dict[bytes, bytes]:
    """Parse the tag=value list of the index-th DKIM-Signature field."""
    fields = re.split(rb"\r\n(?=DKIM-Signature:)", signature.strip())
    value = fields[index].split(b":", 1)[1]
    parsed: dict[bytes, bytes] = dkim.util.parse_tag_value(value)
    return parsed


def signed_headers(signature: bytes) -> list[bytes]:
    """The h= list of a signature."""
    return [h.strip() for h in re.sub(rb"\s+", b"", tags(signature)[b"h"]).split(b":")]


# --- RSA -------------------------------------------------------------------------------------


def test_rsa_signature_verifies_with_dkimpy(rsa_pem: bytes, message: bytes) -> None:
    """The signature verifies against the published key (CHECKLIST 33)."""
    signature = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    assert signature.startswith(b"DKIM-Signature: ")
    assert signature.endswith(b"\r\n")
    assert dkim.verify(signature + message, dnsfunc=dns_for(rsa_pem))


def test_signature_lines_are_folded_and_crlf_only(rsa_pem: bytes, message: bytes) -> None:
    """The field is folded (no line over 78) and has no bare CR or LF."""
    signature = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", signature)
    assert max(len(line) for line in signature.split(b"\r\n")) <= 78


def test_signing_is_deterministic(rsa_pem: bytes, message: bytes) -> None:
    """Same message and timestamp: identical signature, so retries send identical bytes."""
    first = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    assert rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP) == first
    assert rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP + 1) != first


def test_tags(rsa_pem: bytes, message: bytes) -> None:
    """t= is the given timestamp; relaxed/relaxed; rsa-sha256; d= and s= from the key."""
    parsed = tags(rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP))
    assert parsed[b"t"] == str(TIMESTAMP).encode()
    assert parsed[b"a"] == b"rsa-sha256"
    assert parsed[b"c"] == b"relaxed/relaxed"
    assert (parsed[b"d"], parsed[b"s"]) == (b"example.com", b"s0")
    assert b"x" not in parsed
    assert b"l" not in parsed


def test_from_is_oversigned_and_listed_headers_covered(rsa_pem: bytes, message: bytes) -> None:
    """h= lists From twice, covers List-Unsubscribe(-Post)/Feedback-ID, nothing unlisted."""
    names = signed_headers(rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP))
    assert names.count(b"from") == 2
    for name in (b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id"):
        assert name in names
    for name in (b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"):
        assert name in names
    assert b"x-not-signed" not in names
    assert b"cc" not in names  # absent from the message, so not listed
    assert b"reply-to" not in names


def test_second_from_breaks_the_signature(rsa_pem: bytes, message: bytes) -> None:
    """A From added anywhere after signing fails verification (RFC 6376 §8.15)."""
    signature = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    dns = dns_for(rsa_pem)
    head, body = message.split(b"\r\n\r\n", 1)
    evil = b"From: ceo@example.com\r\n"
    assert not dkim.verify(signature + evil + message, dnsfunc=dns)
    assert not dkim.verify(signature + head + b"\r\n" + evil + b"\r\n" + body, dnsfunc=dns)


def test_modified_body_or_header_breaks_the_signature(rsa_pem: bytes, message: bytes) -> None:
    """Changing the body or a signed header fails verification."""
    signature = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    dns = dns_for(rsa_pem)
    assert not dkim.verify(
        signature + message.replace(b"Hello Alice", b"Hello Mallory"), dnsfunc=dns
    )
    assert not dkim.verify(signature + message.replace(b"#123", b"#666"), dnsfunc=dns)
    assert not dkim.verify(signature + message + b"P.S. appended\r\n", dnsfunc=dns)


def test_unsigned_header_and_whitespace_changes_keep_it_valid(
    rsa_pem: bytes, message: bytes
) -> None:
    """relaxed/relaxed tolerates refolding and added unsigned headers (RFC 6376 §3.4.2)."""
    signature = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    dns = dns_for(rsa_pem)
    tampered = b"Received: from relay\r\n" + message.replace(b"Subject: ", b"Subject:   ")
    assert dkim.verify(signature + tampered, dnsfunc=dns)


def test_matches_dkimpy_byte_for_byte(
    rsa_pem: bytes, message: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With dkimpy's clock pinned, dkimpy's own pure-Python signer gives the same field."""
    # RSASSA-PKCS1-v1_5 is deterministic, so equality shows that OpenSSL signing the prehashed
    # header digest is exactly dkimpy's EMSA_PKCS1_v1_5_encode + modular exponentiation.
    ours = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    monkeypatch.setattr(dkim.time, "time", lambda: TIMESTAMP)
    theirs = dkim.sign(
        message,
        b"s0",
        b"example.com",
        rsa_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=signed_headers(ours),
    )
    assert ours == theirs


def test_lf_only_message_is_signed_as_crlf(rsa_pem: bytes, message: bytes) -> None:
    """A message with bare LF line ends is signed as verifiers will see it (CRLF)."""
    lf_message = message.replace(b"\r\n", b"\n")
    signature = rsa_signer(rsa_pem).sign(lf_message, timestamp=TIMESTAMP)
    assert tags(signature)[b"bh"] == tags(rsa_signer(rsa_pem).sign(message, timestamp=1))[b"bh"]
    assert dkim.verify(signature + message, dnsfunc=dns_for(rsa_pem))


def test_utf8_headers_are_signed(rsa_pem: bytes) -> None:
    """SMTPUTF8 messages (raw UTF-8 headers) sign and verify too."""
    content = MessageContent(
        message_id="<u@mail.example.com>",
        date=CONTENT.date,
        sender=Address("noreply@example.com"),
        subject="Grüße",
        to=(Address("jörg@bücher.de", "Jörg"),),
        text="Hallo\n",
    )
    message = render(content)
    signature = rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP)
    assert dkim.verify(signature + message, dnsfunc=dns_for(rsa_pem))


def test_message_without_from_is_refused(rsa_pem: bytes) -> None:
    """RFC 6376 §5.4: From MUST be signed, so a message without one cannot be."""
    with pytest.raises(ValueError, match="From"):
        rsa_signer(rsa_pem).sign(b"Subject: x\r\n\r\nbody\r\n", timestamp=TIMESTAMP)


def test_body_hash_is_computed_once_per_body(rsa_pem: bytes) -> None:
    """Many recipients of one content share the body hash (a cache hit per extra message)."""
    signer = rsa_signer(rsa_pem)
    body = f"unique body {id(signer)}\r\n".encode()
    before_hits, before_misses = signing.BODY_HASH_CACHE.hits, signing.BODY_HASH_CACHE.misses
    for rcpt in ("a", "b", "c"):
        message = f"From: x@example.com\r\nTo: {rcpt}@example.org\r\n\r\n".encode() + body
        signature = signer.sign(message, timestamp=TIMESTAMP)
        assert dkim.verify(signature + message, dnsfunc=dns_for(rsa_pem))
    assert signing.BODY_HASH_CACHE.misses - before_misses == 1
    assert signing.BODY_HASH_CACHE.hits - before_hits == 2


def test_body_hash_matches_rfc_definition(rsa_pem: bytes, message: bytes) -> None:
    """bh= is base64(SHA-256(relaxed body)) (RFC 6376 §3.7), checked independently."""
    body = message.split(b"\r\n\r\n", 1)[1]
    canonical = re.sub(rb"[ \t]+\r\n", b"\r\n", body)
    canonical = re.sub(rb"[ \t]+", b" ", canonical).rstrip(b"\r\n") + b"\r\n"
    expected = base64.b64encode(hashlib.sha256(canonical).digest())
    assert tags(rsa_signer(rsa_pem).sign(message, timestamp=TIMESTAMP))[b"bh"] == expected


def test_internationalised_signing_domain_is_a_label(rsa_pem: bytes, message: bytes) -> None:
    """d= is written in A-label form."""
    signer = DkimSigner([DkimKey("bücher.example", "s0", rsa_pem)])
    assert tags(signer.sign(message, timestamp=TIMESTAMP))[b"d"] == b"xn--bcher-kva.example"


# --- Ed25519 and dual signing ----------------------------------------------------------------


def verify_ed25519(signed: bytes, index: int, pem: bytes) -> bool:
    """Check an ed25519-sha256 signature (RFC 8463) with cryptography and dkimpy's parsing."""
    verifier = dkim.DKIM(signed)
    sig, include, sig_headers = verifier.verify_headerprep(index)
    body = signing._RELAXED.canonicalize_body(verifier.body)
    if base64.b64encode(hashlib.sha256(body).digest()) != re.sub(rb"\s+", b"", sig[b"bh"]):
        return False
    hasher = dkim.HashThrough(hashlib.sha256())
    headers = signing._RELAXED.canonicalize_headers(verifier.headers)
    dkim.hash_headers(hasher, signing._RELAXED, headers, include, sig_headers[index], sig)
    record = dkim.util.parse_tag_value(public_key_record(pem).encode())
    public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(record[b"p"]))
    try:
        public.verify(base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"])), hasher.digest())
    except Exception:
        return False
    return True


def test_ed25519_signature_verifies(ed_pem: bytes, message: bytes) -> None:
    """An ed25519-sha256 signature verifies with the raw public key from the record."""
    signer = DkimSigner([DkimKey("example.com", "s0", ed_pem, "ed25519-sha256")])
    signature = signer.sign(message, timestamp=TIMESTAMP)
    assert tags(signature)[b"a"] == b"ed25519-sha256"
    assert verify_ed25519(signature + message, 0, ed_pem)
    assert not verify_ed25519(signature + message.replace(b"Alice", b"Bob"), 0, ed_pem)
    assert signer.sign(message, timestamp=TIMESTAMP) == signature  # Ed25519 is deterministic


@pytest.mark.skipif(not HAS_NACL, reason="dkimpy verifies ed25519 only with pynacl installed")
def test_ed25519_signature_verifies_with_dkimpy(ed_pem: bytes, message: bytes) -> None:
    """dkimpy's own verifier (pynacl) accepts the ed25519-sha256 signature."""
    signer = DkimSigner([DkimKey("example.com", "s0", ed_pem, "ed25519-sha256")])
    signature = signer.sign(message, timestamp=TIMESTAMP)
    assert dkim.verify(signature + message, dnsfunc=dns_for(ed_pem))


def test_dual_signing_rsa_and_ed25519(rsa_pem: bytes, ed_pem: bytes, message: bytes) -> None:
    """Two keys give two DKIM-Signature fields, each verifying on its own (RFC 8463 §1)."""
    signer = DkimSigner(
        [
            DkimKey("example.com", "s0", rsa_pem),
            DkimKey("example.com", "s1", ed_pem, "ed25519-sha256"),
        ]
    )
    signature = signer.sign(message, timestamp=TIMESTAMP)
    assert signature.count(b"DKIM-Signature:") == 2
    assert (tags(signature, 0)[b"a"], tags(signature, 1)[b"a"]) == (
        b"rsa-sha256",
        b"ed25519-sha256",
    )
    signed = signature + message
    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=dns_for(rsa_pem, ed_pem))
    assert verify_ed25519(signed, 1, ed_pem)
    if HAS_NACL:
        assert dkim.DKIM(signed).verify(idx=1, dnsfunc=dns_for(rsa_pem, ed_pem))


# --- keys ------------------------------------------------------------------------------------


def test_generated_rsa_key_is_2048_bit_pkcs8(rsa_pem: bytes) -> None:
    """generate_rsa_key returns unencrypted PKCS#8 PEM of a 2048-bit key."""
    assert rsa_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(rsa_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_rsa_record_is_spki(rsa_pem: bytes) -> None:
    """The RSA TXT record is `v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>`."""
    record = public_key_record(rsa_pem)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    der = base64.b64decode(record.split("p=", 1)[1])
    public = serialization.load_der_public_key(der)
    key = serialization.load_pem_private_key(rsa_pem, password=None)
    assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_ed25519_record_is_raw_key(ed_pem: bytes) -> None:
    """RFC 8463 §4.2: `k=ed25519; p=` carries the bare 32-byte public key."""
    assert ed_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    record = public_key_record(ed_pem)
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(record.split("p=", 1)[1])) == 32


def test_key_is_loaded_once_and_kept_out_of_repr(rsa_pem: bytes) -> None:
    """The parsed key is cached on the DkimKey and the PEM never appears in its repr."""
    key = DkimKey("example.com", "s0", rsa_pem)
    assert isinstance(key.private_key, rsa.RSAPrivateKey)
    assert "PRIVATE" not in repr(key)
    assert key == DkimKey("example.com", "s0", rsa_pem)


def test_short_rsa_key_is_refused() -> None:
    """Keys under 2048 bits are refused (CHECKLIST 33)."""
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="at least 2048"):
        DkimKey("example.com", "s0", pem)


def test_algorithm_must_match_key(rsa_pem: bytes, ed_pem: bytes) -> None:
    """An RSA key cannot be declared ed25519 and vice versa."""
    with pytest.raises(ValueError, match="Ed25519"):
        DkimKey("example.com", "s0", rsa_pem, "ed25519-sha256")
    with pytest.raises(ValueError, match="RSA"):
        DkimKey("example.com", "s0", ed_pem, "rsa-sha256")


def test_signer_needs_a_key() -> None:
    """An empty key list is a configuration error."""
    with pytest.raises(ValueError, match="at least one key"):
        DkimSigner([])
