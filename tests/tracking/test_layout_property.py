"""Properties of the body layout over arbitrary html (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.tracking.layout import Slot, html_part
from app.tracking.options import TrackingOptions
from app.tracking.tokens import Kind

PUBLIC = "https://links.columba.test"
FRAGMENTS = st.sampled_from(
    [
        "<a href='https://s.test/a?b=1&amp;c'>",
        '<a href="http://s.test">',
        "<a href=mailto:x@s.test>",
        "<a\nhref='https://s.test/\u00e9'\n>",
        "</a>",
        "<body>",
        "</body>",
        "</BODY>",
        "<p>",
        "<!-- <a href='https://in.comment'> -->",
        "<script>var a = '<a href=\"https://x\">';</script>",
        "<style>a{}</style>",
        "&amp;",
        "&",
        "<",
        ">",
        "\r\n",
        "\n",
        "caf\u00e9",
        "<%asm_preferences_raw_url%>",
        "<![CDATA[x]]>",
        "<a",
        '"',
        "'",
    ]
)
HTML = st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(HTML)
def test_without_rewritten_links_the_source_comes_back_around_the_pixel(source: str) -> None:
    part = html_part(source, TrackingOptions(open=True), public_url=PUBLIC)
    slots = [piece for piece in part.pieces if isinstance(piece, Slot)]
    assert [slot.kind for slot in slots if slot.kind is Kind.OPEN] == [Kind.OPEN]
    restored = part.fill(
        lambda slot: "" if slot.kind is Kind.OPEN else "<%asm_preferences_raw_url%>"
    )
    assert restored == source


@settings(max_examples=300, deadline=None)
@given(HTML)
def test_click_slots_carry_only_http_urls(source: str) -> None:
    part = html_part(source, TrackingOptions(click=True), public_url=PUBLIC)
    for piece in part.pieces:
        if isinstance(piece, Slot) and piece.kind is Kind.CLICK:
            assert piece.url is not None
            assert piece.url.lower().startswith(("http://", "https://"))
