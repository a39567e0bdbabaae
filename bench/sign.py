"""Per-message cost of DKIM signing and MIME rendering on this machine.

    python -m bench.sign

Times (median of many runs) one DKIM signature of a typical 2 KB text+html message with
(a) dkimpy's own `dkim.sign` (pure-Python RSA), (b) our `DkimSigner` (OpenSSL RSA), and
(c) the bare OpenSSL RSA-2048 signature of a SHA-256 digest, plus `mime.render` of the same
message and of other typical shapes (text only, attachments, non-ASCII headers, a 50 KB html
body). Shared machines are noisy: compare the ratios, which come from one run.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import dkim
import dkim.util
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from app.delivery import signing
from app.delivery.content import Address, Attachment, MessageContent
from app.delivery.mime import render
from app.delivery.signing import DkimKey, DkimSigner, generate_rsa_key

TIMESTAMP = 1_795_880_765
PARAGRAPH = "Your order #123 has shipped and is on its way to you. Track it any time online. "

HTML = "<html><body><p>Hello Alice,</p><p>" + PARAGRAPH * 7 + "</p></body></html>"

CONTENT = MessageContent(
    message_id="<0195f3c2-7d1e-7a4b-9c1d-2f6a8b9e0c11@mail.example.com>",
    date=datetime(2026, 11, 28, 15, 46, 5, tzinfo=UTC),
    sender=Address("noreply@shop.example.com", "Example Shop"),
    subject="Your order #123 has shipped",
    to=(Address("alice@example.org", "Alice Example"),),
    text="Hello Alice,\n\n" + PARAGRAPH * 7 + "\n",
    html=HTML,
    headers=(
        ("List-Unsubscribe", "<https://shop.example.com/unsubscribe/abc123>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ),
)


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64
ROW = '<tr><td class="item">Item {i}</td><td>' + PARAGRAPH + "</td></tr>\n"
LARGE_HTML = "<html><body><table>\n" + "".join(ROW.format(i=i) for i in range(400))

# mime.render by message shape: (label, content).
SHAPES = [
    ("text only", replace(CONTENT, html=None)),
    ("text+html", CONTENT),
    (
        "text+html+inline image+PDF",
        replace(
            CONTENT,
            html=HTML + '<img src="cid:logo@shop.example.com">',
            attachments=(
                Attachment("logo.png", "image/png", PNG, content_id="logo@shop.example.com"),
                Attachment("invoice-123.pdf", "application/pdf", PDF),
            ),
        ),
    ),
    (
        "non-ASCII subject and names",
        replace(
            CONTENT,
            subject="Ваш заказ №123 отправлен — 您的订单已发货 🚚",
            sender=Address("noreply@shop.example.com", "Ëxample Shöp — Ünïcødé"),
            to=(Address("alice@example.org", "Алиса Пример"),),
        ),
    ),
    ("50 KB html", replace(CONTENT, html=LARGE_HTML[:50_000] + "</table></body></html>")),
]


def median_ms(operation: Callable[[], object], runs: int) -> float:
    """Run `operation` `runs` times (after one warm-up) and return the median in ms."""
    operation()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        operation()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1e6


def signed_headers(signature: bytes) -> list[bytes]:
    """The h= list of our signature, so dkimpy signs exactly the same fields."""
    tags: dict[bytes, bytes] = dkim.util.parse_tag_value(signature.split(b":", 1)[1])
    return [name.strip() for name in tags[b"h"].split(b":")]


def dkimpy_sign(message: bytes, pem: bytes, include: list[bytes]) -> Callable[[], object]:
    """dkimpy as shipped: canonicalisation and RSA all in Python."""
    return lambda: dkim.sign(
        message,
        b"s1",
        b"shop.example.com",
        pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include,
    )


def ours_sign(message: bytes, signer: DkimSigner, cached: bool) -> Callable[[], object]:
    """DkimSigner; uncached clears the body-hash cache so every call hashes the body."""

    def run() -> bytes:
        """Sign once, optionally from a cold body-hash cache."""
        if not cached:
            signing.BODY_HASH_CACHE.clear()
        return signer.sign(message, timestamp=TIMESTAMP)

    return run


def openssl_sign(pem: bytes) -> Callable[[], object]:
    """The bare RSA-2048 PKCS#1 v1.5 signature of a SHA-256 digest."""
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    digest = hashlib.sha256(b"x").digest()
    return lambda: key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def main() -> None:
    """Measure and print the table."""
    pem = generate_rsa_key()
    message = render(CONTENT)
    signer = DkimSigner([DkimKey("shop.example.com", "s1", pem)])
    include = signed_headers(signer.sign(message, timestamp=TIMESTAMP))
    a = median_ms(dkimpy_sign(message, pem, include), runs=25)
    b = median_ms(ours_sign(message, signer, cached=False), runs=300)
    b_warm = median_ms(ours_sign(message, signer, cached=True), runs=300)
    c = median_ms(openssl_sign(pem), runs=300)
    r = median_ms(lambda: render(CONTENT), runs=300)
    rows = [
        ("(a) dkimpy dkim.sign, pure-Python RSA", a),
        ("(b) DkimSigner.sign, OpenSSL RSA", b),
        ("    same, body hash already cached", b_warm),
        ("(c) bare OpenSSL RSA-2048 sign of a digest", c),
        ("mime.render, text+html", r),
        ("render + sign (b)", r + b),
    ]
    print(f"message: {len(message)} bytes; median ms per operation")
    for label, value in rows:
        print(f"{label:<46} {value:8.3f} ms")
    print(f"{'ratio b/c (our overhead over bare RSA)':<46} {b / c:8.1f}x")
    print(f"{'ratio a/b (speed-up over dkimpy)':<46} {a / b:8.1f}x")
    print("\nmime.render by message shape; median ms per render")
    for label, content in SHAPES:
        size = len(render(content))
        runs = 50 if size > 20_000 else 300
        ms = median_ms(partial(render, content), runs)
        print(f"{label:<36} {size:>7} bytes {ms:8.3f} ms")


if __name__ == "__main__":
    main()
