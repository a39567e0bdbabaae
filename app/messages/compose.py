"""From stored rows to the bytes each recipient is sent: render, sign, and say which
recipients may share one SMTP transaction (identical bytes, same return path)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.bounces import verp
from app.delivery import mime
from app.delivery.replies import Reply
from app.delivery.signing import DkimSigner
from app.messages.dispatch import ClaimedRecipient, LoadedMessage, content_of

RENDER_CACHE_SIZE = 64
RENDER_CACHE_MAX_BYTES = 1024 * 1024  # bigger messages are re-rendered rather than kept


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
    """A recipient whose copy could not be made (for example a template that fails)."""

    recipient: ClaimedRecipient
    reply: Reply


class Composer:
    """Renders and signs messages; deterministic, so the cache only saves work."""

    def __init__(self, signer_for: Callable[[LoadedMessage], DkimSigner]) -> None:
        self._signer_for = signer_for
        self._cache: OrderedDict[str, tuple[bytes, bool]] = OrderedDict()

    def copies(
        self, loaded: LoadedMessage, recipients: Sequence[ClaimedRecipient]
    ) -> list[Copy | Refused]:
        """One copy per recipient (all identical for a plain message)."""
        data, smtputf8 = self.signed(loaded)
        return [Copy(recipient, data, smtputf8) for recipient in recipients]

    def signed(self, loaded: LoadedMessage) -> tuple[bytes, bool]:
        """The message rendered and DKIM-signed, and whether it needs SMTPUTF8.

        Message-ID, Date, MIME boundaries and the DKIM t= are fixed at accept time,
        so every retry sends the same bytes (CHECKLIST 26)."""
        key = loaded.message.id
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        content = content_of(loaded)
        body = mime.render(content)
        timestamp = int(loaded.message.created_at.timestamp())
        result = (
            self._signer_for(loaded).sign(body, timestamp=timestamp) + body,
            mime.needs_smtputf8(content),
        )
        if len(result[0]) <= RENDER_CACHE_MAX_BYTES:
            self._cache[key] = result
            if len(self._cache) > RENDER_CACHE_SIZE:
                self._cache.popitem(last=False)
        return result


def return_path(loaded: LoadedMessage, leader: ClaimedRecipient, *, secret_key: bytes) -> str:
    """The envelope sender (MAIL FROM) of a transaction led by `leader`: a VERP address on the
    sending domain's bounce domain, `bounces+<token>@bounces.<domain>`, whose token names the
    leader. Recipients sharing the transaction are found from the DSN's Final-Recipient."""
    return verp.return_path(leader.id, loaded.domain.bounce_domain, secret_key=secret_key)
