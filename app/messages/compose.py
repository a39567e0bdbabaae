"""From stored rows to the bytes each recipient is sent: render, sign, and say which
recipients may share one SMTP transaction (identical bytes, same return path)."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.bounces import verp
from app.delivery import mime
from app.delivery.content import MessageContent
from app.delivery.replies import Reply, synthetic
from app.messages.dispatch import ClaimedRecipient, LoadedMessage, content_of
from app.messages.models import RecipientStatus
from app.messages.personalize import content_for, needs_rendering, render_inputs
from app.submission import compose as submitted
from app.templates.engines import RenderError, RenderLimits

RENDER_CACHE_SIZE = 64
RENDER_CACHE_MAX_BYTES = 1024 * 1024  # bigger messages are re-rendered rather than kept
RENDER_CACHE_TOTAL_BYTES = 8 * 1024 * 1024  # the worker's memory bound counts on this


@dataclass(frozen=True, slots=True)
class Copy:
    """The signed bytes for one recipient."""

    recipient: ClaimedRecipient
    data: bytes
    smtputf8: bool

    @property
    def digest(self) -> bytes:
        """Identifies the content: equal digests mean byte-identical copies."""
        return hashlib.sha256(self.data).digest()


@dataclass(frozen=True, slots=True)
class Refused:
    """A recipient whose copy could not be made (for example a template that fails).

    It ends in `status` at once, with the reply in its event: a template that fails for
    this recipient's data will fail again, so it is dropped rather than retried."""

    recipient: ClaimedRecipient
    reply: Reply
    status: str = RecipientStatus.DROPPED


class Signer(Protocol):
    """What signs a rendered message (app.delivery.signing.DkimSigner)."""

    def sign(self, data: bytes, *, timestamp: int) -> bytes:
        """The signature header field(s) to put before `data`."""
        ...


class Composer:
    """Renders and signs messages; deterministic, so the cache only saves work."""

    def __init__(
        self,
        signer_for: Callable[[LoadedMessage], Signer],
        limits: RenderLimits | None = None,
    ) -> None:
        self._signer_for = signer_for
        self._limits = limits or RenderLimits()
        self._cache: OrderedDict[str, tuple[bytes, bool]] = OrderedDict()
        self._cached_bytes = 0

    def copies(
        self, loaded: LoadedMessage, recipients: Sequence[ClaimedRecipient]
    ) -> list[Copy | Refused]:
        """One copy per recipient: identical for a plain message, rendered per recipient
        when it is personalised (recipients with equal render inputs still share bytes)."""
        if loaded.message.raw_mime is not None:  # submitted over SMTP: signed as stored
            data, smtputf8 = submitted.signed(loaded, self._signer_for(loaded))
            return [Copy(recipient, data, smtputf8) for recipient in recipients]
        if not needs_rendering(loaded) and not any(r.personalization for r in recipients):
            data, smtputf8 = self.signed(loaded)
            return [Copy(recipient, data, smtputf8) for recipient in recipients]
        return [self._personal_copy(loaded, recipient) for recipient in recipients]

    def _personal_copy(self, loaded: LoadedMessage, recipient: ClaimedRecipient) -> Copy | Refused:
        """One recipient's copy, or Refused when their template or headers cannot be made."""
        try:
            data, smtputf8 = self.signed(loaded, recipient.personalization)
        except (RenderError, ValueError) as exc:
            reply = synthetic(550, "5.6.0", f"the message could not be rendered: {exc}")
            return Refused(recipient, reply)
        return Copy(recipient, data, smtputf8)

    def signed(
        self, loaded: LoadedMessage, personalization: dict[str, object] | None = None
    ) -> tuple[bytes, bool]:
        """The message rendered and DKIM-signed, and whether it needs SMTPUTF8.

        Message-ID, Date, MIME boundaries and the DKIM t= are fixed at accept time and
        templates are rendered deterministically, so every retry sends the same bytes
        (CHECKLIST 26)."""
        inputs = render_inputs(personalization)
        key = _cache_key(loaded, inputs)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        content = self._content(loaded, personalization, personal=bool(inputs))
        body = mime.render(content)
        timestamp = int(loaded.message.created_at.timestamp())
        result = (
            self._signer_for(loaded).sign(body, timestamp=timestamp) + body,
            mime.needs_smtputf8(content),
        )
        if len(result[0]) <= RENDER_CACHE_MAX_BYTES:
            self._cache[key] = result
            self._cached_bytes += len(result[0])
            while len(self._cache) > RENDER_CACHE_SIZE or (
                self._cached_bytes > RENDER_CACHE_TOTAL_BYTES
            ):
                self._cached_bytes -= len(self._cache.popitem(last=False)[1][0])
        return result

    def _content(
        self, loaded: LoadedMessage, personalization: dict[str, object] | None, *, personal: bool
    ) -> MessageContent:
        """The content to render: personalised when the copy or the message asks for it."""
        if personal or needs_rendering(loaded):
            return content_for(loaded, personalization, self._limits)
        return content_of(loaded)


def _cache_key(loaded: LoadedMessage, inputs: dict[str, object]) -> str:
    """The message id, plus a digest of the render inputs for a personalised copy."""
    if not inputs:
        return loaded.message.id
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return f"{loaded.message.id}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def return_path(loaded: LoadedMessage, leader: ClaimedRecipient, *, secret_key: bytes) -> str:
    """The envelope sender (MAIL FROM) of a transaction led by `leader`: a VERP address on the
    sending domain's bounce domain, `bounces+<token>@bounces.<domain>`, whose token names the
    leader. Recipients sharing the transaction are found from the DSN's Final-Recipient."""
    return verp.return_path(leader.id, loaded.domain.bounce_domain, secret_key=secret_key)
