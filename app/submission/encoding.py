"""8-bit bodies made 7-bit at submission (RFC 6409 §8.4), so that every server can take them.

A message is signed after this step, so the DKIM signature covers what is sent, and a receiving
server without 8BITMIME (RFC 6152) never sees a byte with the high bit set (CHECKLIST 10). The
standard library's compat32 policy writes back untouched parts and headers byte for byte.
"""

from __future__ import annotations

import base64
import io
import quopri
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser

from app.submission.replies import Refusal

_POLICY = policy.compat32.clone(linesep="\r\n")


def is_seven_bit(data: bytes) -> bool:
    """True when no byte has the high bit set."""
    return data.isascii()


def transfer_encode(message: bytes) -> bytes:
    """The message with every 8-bit leaf part quoted-printable (text) or base64 encoded."""
    parsed = BytesParser(policy=_POLICY).parsebytes(message)
    leaves = [part for part in parsed.walk() if not part.is_multipart()]
    changed = [part for part in leaves if not _payload_is_ascii(part)]
    for part in changed:
        _encode_part(part)
    if changed and "MIME-Version" not in parsed:
        # A plain RFC 5322 message now carries MIME headers (RFC 2045 §4).
        parsed["MIME-Version"] = "1.0"
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(parsed)
    encoded = out.getvalue()
    if not is_seven_bit(encoded):
        # 8-bit text outside any part (a preamble, a header) cannot be encoded (RFC 3463 X.6.3).
        raise Refusal(554, "5.6.3", "Conversion required but not supported: 8-bit data outside "
                      "a MIME part; encode it, or send with SMTPUTF8")  # fmt: skip
    return encoded


def _payload_is_ascii(part: Message) -> bool:
    """True when the part's body holds no 8-bit bytes."""
    payload = part.get_payload()
    return isinstance(payload, str) and payload.isascii()


def _encode_part(part: Message) -> None:
    """Re-encode one leaf: text as quoted-printable, anything else as base64 (RFC 2045 §6)."""
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)  # a leaf part always decodes to bytes
    if "Content-Type" not in part:
        # RFC 2045 §5.2 would read it as us-ascii: say what the bytes are instead.
        charset = "utf-8" if _is_utf8(data) else "unknown-8bit"  # RFC 1428 for the unknown
        part["Content-Type"] = f"text/plain; charset={charset}"
    del part["Content-Transfer-Encoding"]
    if part.get_content_maintype() == "text":
        # quopri reads "\n" as a line break; CRLF is restored by the generator.
        body = quopri.encodestring(data.replace(b"\r\n", b"\n"), quotetabs=False)
        part.set_payload(body.decode("ascii"))
        part["Content-Transfer-Encoding"] = "quoted-printable"
    else:
        part.set_payload(base64.encodebytes(data).decode("ascii"))
        part["Content-Transfer-Encoding"] = "base64"


def _is_utf8(data: bytes) -> bool:
    """True when the bytes decode as UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
