"""Cutting a rendered body into literal text and per-recipient slots (app.tracking.layout)."""

from __future__ import annotations

from typing import Any

import pytest

from app.tracking.layout import (
    MAX_TRACKED_LINKS,
    Part,
    Slot,
    html_part,
    text_part,
    with_utm,
)
from app.tracking.options import TrackingOptions, resolve
from app.tracking.tokens import Kind

PUBLIC = "https://links.columba.test"
CLICKS = TrackingOptions(click=True)


def filled(part: Part) -> str:
    """The part with each slot shown as [KIND url]."""
    return part.fill(lambda slot: f"[{slot.kind.name}{' ' + slot.url if slot.url else ''}]")


def tracked(**settings: Any) -> TrackingOptions:
    return resolve({"tracking_settings": settings}, asm_group_id=None)


def test_http_links_become_click_slots_carrying_the_unescaped_url() -> None:
    part = html_part(
        '<p><a class="b" href="https://shop.test/x?a=1&amp;b=2">Shop</a></p>',
        CLICKS,
        public_url=PUBLIC,
    )
    assert part.pieces == (
        '<p><a class="b" href="',
        Slot(Kind.CLICK, "https://shop.test/x?a=1&b=2"),
        '">Shop</a></p>',
    )


@pytest.mark.parametrize(
    "anchor",
    [
        '<a href="mailto:help@shop.test">mail</a>',
        '<a href="tel:+15550100">call</a>',
        '<a href="#top">top</a>',
        '<a href="/relative">rel</a>',
        '<a name="x">no href</a>',
        f'<a href="{PUBLIC}/u/abc">ours</a>',
        '<a href="<%asm_preferences_raw_url%>">prefs</a>',
        "<A HREF='ftp://files.test/x'>ftp</A>",
    ],
)
def test_links_that_are_not_tracked_keep_their_source(anchor: str) -> None:
    source = f"<p>{anchor}</p>"
    assert (
        filled(html_part(source, CLICKS, public_url=PUBLIC)).replace(
            "[PREFERENCES]", "<%asm_preferences_raw_url%>"
        )
        == source
    )


def test_clicktracking_off_is_left_alone_and_the_attribute_removed() -> None:
    part = html_part(
        '<a clicktracking="off" href="https://keep.test/?q=1&amp;r=2">k</a>'
        '<a href="https://x.test" clicktracking=off>x</a>',
        CLICKS,
        public_url=PUBLIC,
    )
    assert part.static
    assert (
        filled(part)
        == '<a href="https://keep.test/?q=1&amp;r=2">k</a><a href="https://x.test">x</a>'
    )


def test_text_outside_rewritten_tags_is_byte_for_byte_the_source() -> None:
    source = (
        "<!DOCTYPE html>\r\n<html><head><style>a{color:red}</style>"
        "<script>var s = '<a href=\"https://in.script\">';</script></head>\n"
        '<body>caf\u00e9 &amp; <!-- <a href="https://in.comment"> -->\n'
        '  <a href="https://one.test">1</a>\n<a\nhref="https://two.test"\n>2</a></body></html>'
    )
    out = filled(html_part(source, CLICKS, public_url=PUBLIC))
    assert out == (
        "<!DOCTYPE html>\r\n<html><head><style>a{color:red}</style>"
        "<script>var s = '<a href=\"https://in.script\">';</script></head>\n"
        '<body>caf\u00e9 &amp; <!-- <a href="https://in.comment"> -->\n'
        '  <a href="[CLICK https://one.test]">1</a>\n<a href="[CLICK https://two.test]">2</a>'
        "</body></html>"
    )


def test_google_analytics_parameters_are_added_before_sealing_without_duplicates() -> None:
    options = tracked(
        click_tracking={"enable": True},
        ganalytics={"enable": True, "utm_source": "news", "utm_medium": "email", "utm_term": ""},
    )
    part = html_part(
        '<a href="https://s.test/a?utm_source=own#frag">a</a><a href="https://s.test/b">b</a>',
        options,
        public_url=PUBLIC,
    )
    slots = [piece for piece in part.pieces if isinstance(piece, Slot)]
    assert [slot.url for slot in slots] == [
        "https://s.test/a?utm_source=own&utm_medium=email#frag",
        "https://s.test/b?utm_source=news&utm_medium=email",
    ]


def test_with_utm_leaves_a_url_that_has_them_all_unchanged() -> None:
    url = "https://s.test/?utm_source=a&utm_campaign=b"
    assert with_utm(url, (("utm_source", "x"), ("utm_campaign", "y"))) == url


def test_pixel_goes_before_the_last_body_close_or_at_the_end() -> None:
    options = tracked(open_tracking={"enable": True})
    with_body = html_part("<html><body><p>x</p></BODY></html>", options, public_url=PUBLIC)
    assert filled(with_body) == "<html><body><p>x</p>[OPEN]</BODY></html>"
    fragment = html_part("<p>x</p>", options, public_url=PUBLIC)
    assert filled(fragment) == "<p>x</p>[OPEN]"


def test_open_substitution_tag_places_the_pixel() -> None:
    options = tracked(open_tracking={"enable": True, "substitution_tag": "%open%"})
    part = html_part("<body><p>%open%</p>hi</body>", options, public_url=PUBLIC)
    assert filled(part) == "<body><p>[OPEN]</p>hi</body>"
    assert filled(text_part("hi%open%", options, public_url=PUBLIC)) == "hi"


def test_subscription_footer_in_both_parts_with_sendgrids_link_markers() -> None:
    options = tracked(
        subscription_tracking={
            "enable": True,
            "text": "Stop these: <% %>",
            "html": "<p>Stop <% here %> or <% %></p>",
        }
    )
    html = html_part("<body>Hi</body>", options, public_url=PUBLIC)
    assert filled(html) == (
        '<body>Hi<p>Stop <a href="[UNSUBSCRIBE]">here</a> or '
        '<a href="[UNSUBSCRIBE]">[UNSUBSCRIBE]</a></p></body>'
    )
    assert filled(text_part("Hi", options, public_url=PUBLIC)) == "Hi\n\nStop these: [UNSUBSCRIBE]"


def test_subscription_substitution_tag_replaces_the_footer() -> None:
    options = tracked(
        subscription_tracking={"enable": True, "text": "unused", "substitution_tag": "[unsub]"}
    )
    assert filled(text_part("Leave: [unsub]", options, public_url=PUBLIC)) == (
        "Leave: [UNSUBSCRIBE]"
    )
    html = html_part('<a href="[unsub]">leave</a>', options, public_url=PUBLIC)
    assert filled(html) == '<a href="[UNSUBSCRIBE]">leave</a>'


def test_sendgrid_link_tags_are_slots_without_any_tracking() -> None:
    source = (
        "<%asm_group_unsubscribe_raw_url%> <%asm_global_unsubscribe_raw_url%> "
        "<%asm_preferences_raw_url%>"
    )
    for part in (
        text_part(source, TrackingOptions(), public_url=PUBLIC),
        html_part(source, TrackingOptions(), public_url=PUBLIC),
    ):
        assert filled(part) == "[UNSUBSCRIBE] [GLOBAL_UNSUBSCRIBE] [PREFERENCES]"


def test_text_links_are_tracked_only_with_enable_text() -> None:
    source = "See https://s.test/a. Or (https://s.test/b) or mailto:x@s.test"
    assert text_part(source, CLICKS, public_url=PUBLIC).static
    options = tracked(click_tracking={"enable": True, "enable_text": True})
    assert filled(text_part(source, options, public_url=PUBLIC)) == (
        "See [CLICK https://s.test/a]. Or ([CLICK https://s.test/b]) or mailto:x@s.test"
    )


def test_no_more_than_the_limit_of_links_is_tracked() -> None:
    source = '<a href="https://s.test/">x</a>' * (MAX_TRACKED_LINKS + 5)
    part = html_part(source, CLICKS, public_url=PUBLIC)
    assert sum(isinstance(piece, Slot) for piece in part.pieces) == MAX_TRACKED_LINKS


def test_nothing_to_track_is_static() -> None:
    assert html_part('<a href="https://s.test">x</a>', TrackingOptions(), public_url=PUBLIC).static
    assert text_part("https://s.test", CLICKS, public_url=PUBLIC).static
