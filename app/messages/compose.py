"""From stored rows to the bytes each recipient is sent: render, sign, and say which
recipients may share one SMTP transaction (identical bytes, same return path)."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from app.bounces import verp
from app.delivery import mime
from app.delivery.content import MessageContent
from app.delivery.replies import Reply, synthetic
from app.messages.dispatch import ClaimedRecipient, LoadedMessage, content_of
from app.messages.models import RecipientStatus
from app.messages.personalize import content_for, needs_rendering, render_inputs
from app.submission import compose as submitted
from app.templates.engines import RenderError, RenderLimits
from app.tracking import options as tracking_options
from app.tracking.layout import Part, html_part, text_part
from app.tracking.links import LinkSettings, RecipientLinks
from app.tracking.options import TrackingOptions
from app.tracking.tokens import TrackedRecipient

RENDER_CACHE_SIZE = 64
RENDER_CACHE_MAX_BYTES = 1024 * 1024  # bigger messages are re-rendered rather than kept
RENDER_CACHE_TOTAL_BYTES = 8 * 1024 * 1024  # the worker's memory bound counts on this
# Headers a caller may give for themselves; one of them given, Columba adds neither (as
# SendGrid lets the caller's List-Unsubscribe win), so that no copy carries two.
_LIST_UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
# A body cut for one kind of part (html or not) with given options: the key of a Part.
_PartKey = tuple[bool, TrackingOptions, str]


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


@dataclass(frozen=True, slots=True)
class Tracked:
    """A rendered copy whose bodies hold per-recipient links: the content, its bodies as
    literal text and slots, and whether List-Unsubscribe is added. Made once per distinct
    rendered content; each recipient only seals its tokens into it."""

    content: MessageContent
    text: Part | None
    html: Part | None
    list_unsubscribe: bool
    smtputf8: bool

    @property
    def size(self) -> int:
        """Roughly the characters it holds (the cache's bound)."""
        return len(self.content.text or "") + len(self.content.html or "") + 1024


class _Lru(Generic[K, V]):
    """Entries bounded in number and in total size, least recently used dropped first."""

    def __init__(self, size_of: Callable[[V], int], *, max_bytes: int) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._size_of = size_of
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, key: K) -> V | None:
        """The entry, now the most recently used."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep an entry unless it is too big to, dropping old ones beyond the bounds."""
        size = self._size_of(value)
        if size > RENDER_CACHE_MAX_BYTES or key in self._entries:
            return
        self._entries[key] = value
        self._bytes += size
        while len(self._entries) > RENDER_CACHE_SIZE or self._bytes > self._max_bytes:
            self._bytes -= self._size_of(self._entries.popitem(last=False)[1])


class Composer:
    """Renders and signs messages; deterministic, so the caches only save work."""

    def __init__(
        self,
        signer_for: Callable[[LoadedMessage], Signer],
        limits: RenderLimits | None = None,
        links: LinkSettings | None = None,
    ) -> None:
        self._signer_for = signer_for
        self._limits = limits or RenderLimits()
        self._links = links  # None: no tracking, no List-Unsubscribe (tests of plain MIME)
        # The three caches share RENDER_CACHE_TOTAL_BYTES: half for signed bytes, a quarter
        # each for tracked renderings and cut bodies.
        quarter = RENDER_CACHE_TOTAL_BYTES // 4
        self._cache: _Lru[str, tuple[bytes, bool]] = _Lru(
            lambda signed: len(signed[0]), max_bytes=2 * quarter
        )
        self._layouts: _Lru[str, Tracked | bool] = _Lru(
            lambda tracked: tracked.size if isinstance(tracked, Tracked) else 64,
            max_bytes=quarter,
        )
        # Copies that differ only in their headers (To, Subject, …) share their bodies' cuts:
        # the html is parsed once per distinct body, not once per rendering.
        self._parts: _Lru[_PartKey, Part] = _Lru(_part_size, max_bytes=quarter)

    def copies(
        self, loaded: LoadedMessage, recipients: Sequence[ClaimedRecipient]
    ) -> list[Copy | Refused]:
        """One copy per recipient: identical for a plain message, rendered per recipient
        when it is personalised (recipients with equal render inputs still share bytes) or
        carries their own links (tracking, List-Unsubscribe, unsubscribe tags)."""
        options = self._options(loaded)
        if loaded.message.raw_mime is not None:  # submitted over SMTP: signed as stored
            return self._submitted_copies(loaded, recipients, options)
        shared = not needs_rendering(loaded) and not any(r.personalization for r in recipients)
        if shared and self._tracked(loaded, None, options) is None:
            data, smtputf8 = self.signed(loaded)
            return [Copy(recipient, data, smtputf8) for recipient in recipients]
        return [self._personal_copy(loaded, recipient, options) for recipient in recipients]

    def _submitted_copies(
        self,
        loaded: LoadedMessage,
        recipients: Sequence[ClaimedRecipient],
        options: TrackingOptions | None,
    ) -> list[Copy | Refused]:
        """Copies of a message submitted over SMTP: its bytes as stored, with each
        recipient's List-Unsubscribe on top when it has a group (X-SMTPAPI's asm_group_id)
        and no List-Unsubscribe of its own. Its body is not rewritten."""
        raw = loaded.message.raw_mime or b""
        if (
            options is None
            or not options.list_unsubscribe
            or (submitted.header_names(raw) & _LIST_UNSUBSCRIBE_HEADERS)
        ):
            data, smtputf8 = submitted.signed(loaded, self._signer_for(loaded))
            return [Copy(recipient, data, smtputf8) for recipient in recipients]
        copies: list[Copy | Refused] = []
        for recipient in recipients:
            headers = self._links_of(loaded, recipient).list_unsubscribe(
                loaded.domain.bounce_domain
            )
            data, smtputf8 = submitted.signed(loaded, self._signer_for(loaded), headers)
            copies.append(Copy(recipient, data, smtputf8))
        return copies

    def _links_of(self, loaded: LoadedMessage, recipient: ClaimedRecipient) -> RecipientLinks:
        """The recipient's links (only asked for with link settings)."""
        assert self._links is not None
        return RecipientLinks(
            self._links,
            TrackedRecipient(
                account_id=recipient.account_id,
                message_id=recipient.message_id,
                recipient_id=recipient.id,
                email=recipient.email,
                group_id=loaded.message.asm_group_id,
            ),
        )

    def _options(self, loaded: LoadedMessage) -> TrackingOptions | None:
        """The message's tracking; None when this composer makes no links."""
        if self._links is None:
            return None
        message = loaded.message
        return tracking_options.resolve(message.settings, asm_group_id=message.asm_group_id)

    def _personal_copy(
        self, loaded: LoadedMessage, recipient: ClaimedRecipient, options: TrackingOptions | None
    ) -> Copy | Refused:
        """One recipient's copy, or Refused when their template or headers cannot be made."""
        try:
            tracked = self._tracked(loaded, recipient.personalization, options)
            if tracked is None:
                data, smtputf8 = self.signed(loaded, recipient.personalization)
            else:
                data, smtputf8 = self._tracked_copy(loaded, recipient, tracked), tracked.smtputf8
        except (RenderError, ValueError) as exc:
            reply = synthetic(550, "5.6.0", f"the message could not be rendered: {exc}")
            return Refused(recipient, reply)
        return Copy(recipient, data, smtputf8)

    def _tracked(
        self,
        loaded: LoadedMessage,
        personalization: dict[str, object] | None,
        options: TrackingOptions | None,
    ) -> Tracked | None:
        """The copy's content cut for per-recipient links; None when every recipient of
        this content gets the same bytes. Cached like the signed bytes."""
        if options is None or self._links is None:
            return None
        inputs = render_inputs(personalization)
        key = _cache_key(loaded, inputs)
        cached = self._layouts.get(key)
        if cached is None:
            content = self._content(loaded, personalization, personal=bool(inputs))
            cached = _cut(content, options, self._part) or False
            self._layouts.put(key, cached)
        return cached if isinstance(cached, Tracked) else None

    def _part(self, source: str, options: TrackingOptions, *, html: bool) -> Part:
        """A body cut into text and slots, from the cache when the same body was cut."""
        assert self._links is not None  # parts are only cut with link settings
        key = (html, options, source)
        part = self._parts.get(key)
        if part is None:
            cut = html_part if html else text_part
            part = cut(source, options, public_url=self._links.public_url)
            self._parts.put(key, part)
        return part

    def _tracked_copy(
        self, loaded: LoadedMessage, recipient: ClaimedRecipient, tracked: Tracked
    ) -> bytes:
        """One recipient's signed bytes: their tokens sealed into the cut content."""
        links = self._links_of(loaded, recipient)
        headers = tracked.content.headers
        if tracked.list_unsubscribe:
            headers += links.list_unsubscribe(loaded.domain.bounce_domain)
        content = replace(
            tracked.content,
            text=tracked.text.fill(links.text) if tracked.text else tracked.content.text,
            html=tracked.html.fill(links.html) if tracked.html else tracked.content.html,
            headers=headers,
        )
        return self._sign(loaded, content)

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
            return cached
        content = self._content(loaded, personalization, personal=bool(inputs))
        result = (self._sign(loaded, content), mime.needs_smtputf8(content))
        self._cache.put(key, result)
        return result

    def _sign(self, loaded: LoadedMessage, content: MessageContent) -> bytes:
        """The content rendered, with its DKIM signature (t= fixed at accept time) before it."""
        body = mime.render(content)
        timestamp = int(loaded.message.created_at.timestamp())
        return self._signer_for(loaded).sign(body, timestamp=timestamp) + body

    def _content(
        self, loaded: LoadedMessage, personalization: dict[str, object] | None, *, personal: bool
    ) -> MessageContent:
        """The content to render: personalised when the copy or the message asks for it."""
        if personal or needs_rendering(loaded):
            return content_for(loaded, personalization, self._limits)
        return content_of(loaded)


def _part_size(part: Part) -> int:
    """Roughly what a cached Part holds: its text, and the source it is keyed by."""
    return 2 * sum(len(piece) if isinstance(piece, str) else 64 for piece in part.pieces) + 256


def _cut(
    content: MessageContent, options: TrackingOptions, part: Callable[..., Part]
) -> Tracked | None:
    """The content as a Tracked (its bodies cut by `part`), or None when it has nothing per
    recipient."""
    own_header = any(name.lower() in _LIST_UNSUBSCRIBE_HEADERS for name, _ in content.headers)
    list_unsubscribe = options.list_unsubscribe and not own_header
    text = part(content.text, options, html=False) if content.text else None
    html = part(content.html, options, html=True) if content.html else None
    if not list_unsubscribe and all(body is None or body.static for body in (text, html)):
        return None
    return Tracked(
        content=content,
        text=text,
        html=html,
        list_unsubscribe=list_unsubscribe,
        smtputf8=mime.needs_smtputf8(content),
    )


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
