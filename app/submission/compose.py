"""Signing a message submitted over SMTP: its stored bytes, exactly as accepted.

Received, Message-ID and Date were fixed at accept time and X-SMTPAPI was removed then, and
the DKIM t= is the accept time, so a retry sends identical bytes (CHECKLIST 26).
"""

from __future__ import annotations

from typing import Protocol

from app.messages.dispatch import LoadedMessage


class Signer(Protocol):
    """What signs a message (app.delivery.signing.DkimSigner)."""

    def sign(self, data: bytes, *, timestamp: int) -> bytes:
        """The signature header field(s) to put before `data`."""
        ...


def needs_smtputf8(data: bytes) -> bool:
    """True when the header block holds UTF-8 (RFC 6532), which only SMTPUTF8 may carry."""
    end = data.find(b"\r\n\r\n")
    return not (data if end < 0 else data[:end]).isascii()


def header_names(data: bytes) -> set[str]:
    """The names of the fields in the header block, lower-cased."""
    end = data.find(b"\r\n\r\n")
    lines = (data if end < 0 else data[:end]).split(b"\r\n")
    # RFC 5322 §2.2.3: a line that starts with a blank continues the field before it.
    return {
        line.partition(b":")[0].strip().decode("ascii", "replace").lower()
        for line in lines
        if line[:1] not in (b" ", b"\t") and b":" in line
    }


def signed(
    loaded: LoadedMessage, signer: Signer, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[bytes, bool]:
    """The stored message with our DKIM-Signature on top, and whether it needs SMTPUTF8;
    `headers` (short ASCII fields of Columba's own: List-Unsubscribe) go before its own."""
    data = loaded.message.raw_mime
    if data is None:
        raise ValueError(f"message {loaded.message.id} was not submitted as MIME")
    data = b"".join(f"{name}: {value}\r\n".encode("ascii") for name, value in headers) + data
    timestamp = int(loaded.message.created_at.timestamp())
    return signer.sign(data, timestamp=timestamp) + data, needs_smtputf8(data)
