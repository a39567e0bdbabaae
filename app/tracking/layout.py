"""A rendered body cut into literal text and slots for each recipient's own links.

Rewriting is done once per distinct rendered body: the html is tokenized (html.parser), its
links, pixel, unsubscribe footer and SendGrid's link tags become `Slot`s, and each copy only
seals its tokens and joins them in (`fill`). So tracking costs a parse per distinct body, not
per recipient.

What is rewritten, as SendGrid's click tracking does: `<a href>` with an http(s) URL. Left
alone: other schemes (mailto:, tel:), anchors (#…), our own tracking and unsubscribe links,
links given as a tag (`href="<%asm_group_unsubscribe_raw_url%>"`), and links marked
`clicktracking="off"` (the attribute itself is removed: it is not HTML and must not reach the
reader). At most MAX_TRACKED_LINKS links are tracked per part, SendGrid's limit.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from app.tracking.options import Subscription, TrackingOptions
from app.tracking.tokens import CLICK_PATH, OPEN_PATH, UNSUBSCRIBE_PATH, Kind

MAX_TRACKED_LINKS = 1000
# SendGrid's substitution tags for a recipient's own unsubscribe and preference links.
GROUP_UNSUBSCRIBE_TAG = "<%asm_group_unsubscribe_raw_url%>"
GLOBAL_UNSUBSCRIBE_TAG = "<%asm_global_unsubscribe_raw_url%>"
PREFERENCES_TAG = "<%asm_preferences_raw_url%>"
LINK_TAGS = {
    GROUP_UNSUBSCRIBE_TAG: Kind.UNSUBSCRIBE,
    GLOBAL_UNSUBSCRIBE_TAG: Kind.GLOBAL_UNSUBSCRIBE,
    PREFERENCES_TAG: Kind.PREFERENCES,
}
# SendGrid's Handlebars names for the same links (`{{{unsubscribe}}}`): template data that
# renders to the tags above, which then become the recipient's links like any other tag.
HANDLEBARS_LINKS = {
    "unsubscribe": GROUP_UNSUBSCRIBE_TAG,
    "unsubscribe_preferences": PREFERENCES_TAG,
}
# The footer's link marker, `<% click here %>` (SendGrid's subscription tracking texts).
_FOOTER_LINK = re.compile(r"<%(?!asm_)\s*(.*?)\s*%>", re.DOTALL)
# A URL in plain text: up to the next blank, quote or angle bracket, without the
# punctuation that usually ends the sentence around it.
_TEXT_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
PIXEL_STYLE = "display:block;width:1px;height:1px;border:0;margin:0;padding:0"


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a recipient's own link goes: an unsubscribe or preferences link, a click link
    for `url`, or (OPEN) the whole pixel `<img>`."""

    kind: Kind
    url: str | None = None


Piece = str | Slot
Resolve = Callable[[Slot], str]


@dataclass(frozen=True, slots=True)
class Part:
    """A body as literal text and slots."""

    pieces: tuple[Piece, ...]

    @property
    def static(self) -> bool:
        """True when every copy has the same text."""
        return all(isinstance(piece, str) for piece in self.pieces)

    def fill(self, resolve: Resolve) -> str:
        """The text with each slot resolved for one recipient."""
        return "".join(p if isinstance(p, str) else resolve(p) for p in self.pieces)


def text_part(text: str, options: TrackingOptions, *, public_url: str) -> Part:
    """The text body: footer appended, link tags as slots, and its URLs when `click_text`."""
    subscription = options.subscription
    if subscription is not None and subscription.substitution_tag is None:
        text = f"{text}\n\n{_text_footer(subscription)}"
    pieces = list(_split_tags(text, _tags(options, html=False)))
    if options.click_text:
        pieces = list(_text_links(pieces, options, _own_prefixes(public_url)))
    return Part(tuple(_joined(pieces)))


def html_part(source: str, options: TrackingOptions, *, public_url: str) -> Part:
    """The html body: links rewritten, footer and pixel before </body>, tags as slots."""
    if not options.rewrites_html:  # only SendGrid's link tags, if any: no parse needed
        return Part(tuple(_joined(_split_tags(source, _tags(options, html=True)))))
    scan = _Scanner(source)
    pieces: list[Piece] = []
    at, tracked = 0, 0
    own = _own_prefixes(public_url)
    for anchor in scan.anchors:
        rewritten = _anchor(anchor, options, own, tracked < MAX_TRACKED_LINKS)
        if rewritten is None:
            continue
        pieces += [source[at : anchor.start], *rewritten]
        tracked += any(isinstance(piece, Slot) for piece in rewritten)
        at = anchor.end
    end = scan.body_end if scan.body_end is not None and scan.body_end >= at else len(source)
    pieces += [source[at:end], *_html_appendix(source, options), source[end:]]
    tags = _tags(options, html=True)
    return Part(tuple(_joined(s for piece in pieces for s in _split_piece(piece, tags))))


# --- html ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Anchor:
    """An `<a>` start tag: where it is in the source and its attributes."""

    start: int
    end: int
    attrs: tuple[tuple[str, str | None], ...]
    closed: bool  # written `<a … />`


class _Scanner(HTMLParser):
    """Finds the `<a>` start tags and the last `</body>` of a document."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[_Anchor] = []
        self.body_end: int | None = None
        self._source = source
        self._lines = [0, *(m.end() for m in re.finditer("\n", source))]
        self.feed(source)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._lines[line - 1] + column

    def _anchor(self, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        raw = self.get_starttag_text() or ""
        start = self._offset()
        if self._source.startswith(raw, start):  # else leave it: never rewrite blindly
            self.anchors.append(_Anchor(start, start + len(raw), tuple(attrs), closed))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note an anchor."""
        if tag == "a":
            self._anchor(attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note an anchor written as `<a … />`."""
        if tag == "a":
            self._anchor(attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        """Note where the (last) body ends."""
        if tag == "body":
            self.body_end = self._offset()


def _anchor(
    anchor: _Anchor, options: TrackingOptions, own: tuple[str, ...], may_track: bool
) -> list[Piece] | None:
    """The anchor's replacement, or None to keep its source as it is."""
    attrs = [(name, value) for name, value in anchor.attrs if name != "clicktracking"]
    opted_out = len(attrs) < len(anchor.attrs)
    href = next((value for name, value in attrs if name == "href"), None)
    track = options.click and may_track and not opted_out and _trackable(href, own)
    if not (track or opted_out):
        return None
    pieces: list[Piece] = ["<a"]
    for name, value in attrs:
        if value is None:
            pieces.append(f" {name}")
        elif name == "href" and track and href is not None:
            pieces += [f' {name}="', Slot(Kind.CLICK, with_utm(href, options.utm)), '"']
        else:
            pieces.append(f' {name}="{html.escape(value)}"')
    pieces.append(" />" if anchor.closed else ">")
    return pieces


def _trackable(href: str | None, own: tuple[str, ...]) -> bool:
    """An http(s) URL that is neither ours nor a SendGrid link tag."""
    if href is None:
        return False
    url = href.strip()
    if not url.lower().startswith(("http://", "https://")):
        return False  # mailto:, tel:, #anchors, relative and templated links
    return not url.startswith(own) and "<%" not in url


def _html_appendix(source: str, options: TrackingOptions) -> list[Piece]:
    """What goes before </body> (or at the end): the footer, then the pixel."""
    pieces: list[Piece] = []
    subscription = options.subscription
    if subscription is not None and subscription.substitution_tag is None:
        pieces.append(_FOOTER_LINK.sub(_html_link, subscription.html))
    if options.open and not (options.open_tag and options.open_tag in source):
        pieces.append(Slot(Kind.OPEN))
    return pieces


def _html_link(match: re.Match[str]) -> str:
    """`<% click here %>` as a link to the recipient's unsubscribe URL."""
    label = match.group(1) or GROUP_UNSUBSCRIBE_TAG
    return f'<a href="{GROUP_UNSUBSCRIBE_TAG}">{label}</a>'


def pixel(link: str) -> str:
    """The open-tracking image: 1×1, no alt text, out of the layout."""
    return (
        f'<img src="{html.escape(link)}" width="1" height="1" alt="" '
        f'style="{PIXEL_STYLE}" border="0">'
    )


# --- text ------------------------------------------------------------------------------------


def _text_footer(subscription: Subscription) -> str:
    """The text footer, its `<% label %>` as "label (URL)" and `<% %>` as the URL."""

    def link(match: re.Match[str]) -> str:
        label = match.group(1)
        return f"{label} ({GROUP_UNSUBSCRIBE_TAG})" if label else GROUP_UNSUBSCRIBE_TAG

    return _FOOTER_LINK.sub(link, subscription.text)


def _text_links(
    pieces: Iterable[Piece], options: TrackingOptions, own: tuple[str, ...]
) -> Iterator[Piece]:
    """The URLs in the literal text as click slots (up to MAX_TRACKED_LINKS)."""
    tracked = 0
    for piece in pieces:
        if isinstance(piece, Slot):
            yield piece
            continue
        at = 0
        for match in _TEXT_URL.finditer(piece):
            url = match.group(0).rstrip(_TRAILING)
            if tracked >= MAX_TRACKED_LINKS or url.startswith(own):
                continue
            yield piece[at : match.start()]
            yield Slot(Kind.CLICK, with_utm(url, options.utm))
            at, tracked = match.start() + len(url), tracked + 1
        yield piece[at:]


# --- shared ----------------------------------------------------------------------------------


def _tags(options: TrackingOptions, *, html: bool) -> dict[str, Piece]:
    """The tags replaced in this kind of part, by a slot (or, for the pixel's tag in the
    text part, by nothing: a text part shows no image)."""
    tags: dict[str, Piece] = {tag: Slot(kind) for tag, kind in LINK_TAGS.items()}
    subscription = options.subscription
    if subscription is not None and subscription.substitution_tag:
        tags[subscription.substitution_tag] = Slot(Kind.UNSUBSCRIBE)
    if options.open and options.open_tag:
        tags[options.open_tag] = Slot(Kind.OPEN) if html else ""
    return tags


def _split_piece(piece: Piece, tags: dict[str, Piece]) -> Iterator[Piece]:
    if isinstance(piece, Slot):
        yield piece
    else:
        yield from _split_tags(piece, tags)


def _split_tags(text: str, tags: dict[str, Piece]) -> Iterator[Piece]:
    """The text with every tag as its slot (longest tag first where they overlap)."""
    present = sorted((tag for tag in tags if tag in text), key=len, reverse=True)
    if not present:
        yield text
        return
    pattern = re.compile("|".join(re.escape(tag) for tag in present))
    at = 0
    for match in pattern.finditer(text):
        yield text[at : match.start()]
        yield tags[match.group(0)]
        at = match.end()
    yield text[at:]


def _joined(pieces: Iterable[Piece]) -> Iterator[Piece]:
    """Adjacent literal pieces as one, empty ones dropped."""
    literal: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            literal.append(piece)
            continue
        if any(literal):
            yield "".join(literal)
        literal = []
        yield piece
    if any(literal):
        yield "".join(literal)


def _own_prefixes(public_url: str) -> tuple[str, ...]:
    """Our own links, which are never wrapped again."""
    base = public_url.rstrip("/")
    return tuple(base + path for path in (OPEN_PATH, CLICK_PATH, UNSUBSCRIBE_PATH))


def with_utm(url: str, utm: tuple[tuple[str, str], ...]) -> str:
    """The URL with the Google Analytics parameters it does not already have."""
    if not utm:
        return url
    try:
        parts = urlsplit(url)
        present = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    except ValueError:  # not a URL urllib can take apart: tracked as it is
        return url
    missing = [(name, value) for name, value in utm if name not in present]
    if not missing:
        return url
    query = "&".join(filter(None, (parts.query, urlencode(missing))))
    return urlunsplit(parts._replace(query=query))
