"""A message as its recipient got it: the stored raw copy (SMTP submissions) or the worker's
own rendering again, and the DKIM result of those bytes checked with dkimpy against DNS."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dkim
import dns.exception
import dns.resolver
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import ApiError, NotFound
from app.delivery.resolver import make_resolver
from app.delivery.signing import DkimSigner
from app.domains.service import dkim_keys
from app.messages.compose import Composer
from app.messages.dispatch import LoadedMessage, load_message
from app.messages.models import Message, Recipient
from app.submission import compose as submitted

DKIM_FIELD = re.compile(rb"^DKIM-Signature:", re.IGNORECASE | re.MULTILINE)


class ContentPurged(ApiError):
    """410: the message is known but its content is gone: nothing can be rendered again."""

    status_code = 410


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One DKIM-Signature field: its d= and s=, and whether it verifies."""

    domain: str
    selector: str
    valid: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Source:
    """The bytes of one copy, where they come from, and their signatures' verdicts."""

    data: bytes
    origin: str  # "stored" (the copy submitted over SMTP) or "rendered" (re-rendered now)
    dkim: list[DkimResult]


async def source_of(
    session: AsyncSession, settings: Settings, *, account_id: str, message_id: str,
    recipient_id: str | None, verify_dkim: bool = True,
) -> Source:  # fmt: skip
    """The signed copy for one recipient (or the message's first), verified against DNS."""
    message = await session.get(Message, message_id)
    if message is None or message.account_id != account_id:
        raise NotFound("message not found", "id")
    if message.content_purged_at is not None:
        raise ContentPurged("the content of this message was removed (COLUMBA_CONTENT_RETENTION)")
    recipient = await _recipient(session, message_id, recipient_id)
    loaded = await load_message(session, message_id=message_id)
    data, origin = _signed_copy(settings, loaded, recipient)
    return Source(data, origin, await verify(settings, data) if verify_dkim else [])


async def _recipient(
    session: AsyncSession, message_id: str, recipient_id: str | None
) -> Recipient | None:
    """The chosen recipient of the message (None: the message has none, or none chosen)."""
    if recipient_id is None:
        return None
    recipient = await session.get(Recipient, recipient_id)
    if recipient is None or recipient.message_id != message_id:
        raise NotFound("recipient not found", "recipient")
    return recipient


def _signed_copy(
    settings: Settings, loaded: LoadedMessage, recipient: Recipient | None
) -> tuple[bytes, str]:
    """The bytes the worker sends: it renders deterministically (Message-ID, Date, boundaries
    and DKIM t= fixed at accept), so rendering again gives the bytes that were sent."""
    signer = DkimSigner(dkim_keys(loaded.domain, secret_key=settings.secret_key_bytes()))
    if loaded.message.raw_mime is not None:
        return submitted.signed(loaded, signer)[0], "stored"
    personalization = recipient.personalization if recipient is not None else None
    data, _ = Composer(lambda _: signer).signed(loaded, personalization)
    return data, "rendered"


async def verify(settings: Settings, data: bytes) -> list[DkimResult]:
    """Every DKIM-Signature of `data` verified with dkimpy (RFC 6376 §6), in a thread."""
    nameservers = make_resolver(settings.dns_nameservers, timeout=2).nameservers
    count = len(DKIM_FIELD.findall(data.split(b"\r\n\r\n", 1)[0]))
    return await asyncio.to_thread(_verify_all, data, count, nameservers)


def _verify_all(data: bytes, count: int, nameservers: Sequence[Any]) -> list[DkimResult]:
    """dkimpy verifies one signature per call: each index in turn."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = list(nameservers)
    resolver.lifetime = 3

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    results = []
    for index in range(count):
        checker = dkim.DKIM(data)
        try:
            valid, detail = bool(checker.verify(idx=index, dnsfunc=lookup)), ""
        except dkim.DKIMException as exc:
            valid, detail = False, str(exc)
        tags = checker.signature_fields or {}
        results.append(
            DkimResult(
                tags.get(b"d", b"?").decode(errors="replace"),
                tags.get(b"s", b"?").decode(errors="replace"),
                valid,
                detail or ("signature verified" if valid else "signature does not verify"),
            )
        )
    return results
