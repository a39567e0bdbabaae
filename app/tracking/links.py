"""One recipient's links: the tokens sealed into a copy's slots and its List-Unsubscribe.

RFC 8058 §3.1: the List-Unsubscribe field carries the one-click HTTPS URI (a POST to it with
`List-Unsubscribe=One-Click` unsubscribes), and List-Unsubscribe-Post says the receiver may
send that POST; RFC 2369 §3.2 lists the URIs in angle brackets, most preferred first, so the
mailto: follows for receivers that only mail. Both fields must be covered by the DKIM
signature (RFC 8058 §4), which app.delivery.signing.SIGNED_HEADERS sees to.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from app.tracking.layout import Slot, pixel
from app.tracking.tokens import Kind, Token, TrackedRecipient, link, mailto_address

ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where links point (COLUMBA_PUBLIC_URL) and the key their tokens are sealed with."""

    public_url: str
    secret_key: bytes


@dataclass(slots=True)
class RecipientLinks:
    """A recipient's links, each sealed once however often the copy uses it."""

    settings: LinkSettings
    recipient: TrackedRecipient
    _sealed: dict[tuple[Kind, str | None], str | None] = field(default_factory=dict)

    def url(self, kind: Kind, url: str | None = None) -> str | None:
        """The link of this kind (for a click: to `url`); None when the address is too
        long to fit in a token (app.tracking.tokens.MAX_EMAIL_BYTES)."""
        key = (kind, url)
        if key not in self._sealed:
            token = Token(kind, self.recipient, url)
            try:
                made: str | None = link(
                    self.settings.public_url, token, secret_key=self.settings.secret_key
                )
            except ValueError:
                made = None
            self._sealed[key] = made
        return self._sealed[key]

    def text(self, slot: Slot) -> str:
        """A slot of the text part: the bare link (a click falls back to its URL)."""
        return self.url(slot.kind, slot.url) or slot.url or ""

    def html(self, slot: Slot) -> str:
        """A slot of the html part: the escaped link, or the whole pixel for OPEN."""
        made = self.url(slot.kind, slot.url)
        if slot.kind is Kind.OPEN:
            return pixel(made) if made is not None else ""
        return html.escape(made or slot.url or "")

    def list_unsubscribe(self, bounce_domain: str) -> tuple[tuple[str, str], ...]:
        """List-Unsubscribe (one-click URI, then mailto:) and List-Unsubscribe-Post."""
        mailto = mailto_address(
            self.recipient.recipient_id, bounce_domain, secret_key=self.settings.secret_key
        )
        one_click = self.url(Kind.UNSUBSCRIBE)
        if one_click is None:  # RFC 8058 §3.1: no Post field without the HTTPS URI
            return (("List-Unsubscribe", f"<mailto:{mailto}>"),)
        return (
            ("List-Unsubscribe", f"<{one_click}>, <mailto:{mailto}>"),
            ("List-Unsubscribe-Post", ONE_CLICK),
        )
