"""The unsubscribe page (GET /u/{token}): what the link unsubscribes from, buttons that POST,
and the groups to choose from. Everything shown is escaped: the address, group names and
descriptions and the account's landing text all come from outside."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser

from app.tracking.service import GroupChoice

# No script, nothing loaded from elsewhere, forms post only back here.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;"
    "color:#222}button{font-size:1em;padding:.4em 1em;margin:.3em 0}"
    "fieldset{border:1px solid #ccc}.notice{background:#eef6ee;padding:.5em 1em}"
)


@dataclass(frozen=True, slots=True)
class PageView:
    """Everything the page shows."""

    email: str
    group: GroupChoice | None  # what the link unsubscribes from; None: every mail
    globally_unsubscribed: bool
    choices: list[GroupChoice]  # the checkbox list (empty: none shown)
    landing: str = ""  # the account's subscription landing text (HTML: shown as text)
    notice: str = ""


class _Text(HTMLParser):
    """The text of an HTML fragment, without its tags, scripts or styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def text_of(fragment: str) -> str:
    """The readable text of the account's landing HTML (its markup is not trusted here)."""
    parser = _Text()
    parser.feed(fragment)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def _button(action: str, label: str) -> str:
    return (
        f'<form method="post"><input type="hidden" name="action" value="{action}">'
        f'<button type="submit">{escape(label)}</button></form>'
    )


def _what(view: PageView) -> str:
    """What this link unsubscribes from, and the buttons for it."""
    email = escape(view.email)
    if view.group is not None:
        name = escape(view.group.name)
        about = f" ({escape(view.group.description)})" if view.group.description else ""
        state = "receives" if view.group.subscribed else "no longer receives"
        return (
            f"<p>This link unsubscribes <b>{email}</b> from “{name}”{about}. "
            f"This address {state} this kind of mail.</p>"
            + _button("unsubscribe", f"Unsubscribe from “{view.group.name}”")
            + _button("resubscribe", f"Resubscribe to “{view.group.name}”")
            + _button("unsubscribe_all", "Unsubscribe from all mail")
        )
    return f"<p>This link unsubscribes <b>{email}</b> from all mail of this sender.</p>" + (
        _button("unsubscribe", "Unsubscribe from all mail")
    )


def _global(view: PageView) -> str:
    """The state of the global opt-out, with a way back."""
    if not view.globally_unsubscribed:
        return ""
    return "<p>This address receives no mail of this sender.</p>" + _button(
        "resubscribe_all", "Resubscribe to all mail"
    )


def _choices(view: PageView) -> str:
    """The checkbox list of groups."""
    if not view.choices:
        return ""
    boxes = "".join(
        f'<label><input type="checkbox" name="group" value="{choice.id}"'
        f"{' checked' if choice.subscribed else ''}> {escape(choice.name)}"
        + (f" — {escape(choice.description)}" if choice.description else "")
        + "</label><br>"
        for choice in view.choices
    )
    return (
        '<form method="post"><fieldset><legend>Mail you want to receive</legend>'
        f'<input type="hidden" name="action" value="preferences">{boxes}'
        '<button type="submit">Save preferences</button></fieldset></form>'
    )


def render(view: PageView) -> str:
    """The page as HTML."""
    notice = f'<p class="notice">{escape(view.notice)}</p>' if view.notice else ""
    landing = f"<p>{escape(text_of(view.landing))}</p>" if view.landing else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Unsubscribe</title><style>{_STYLE}</style></head><body>"
        f"<h1>Unsubscribe</h1>{notice}{landing}{_what(view)}{_global(view)}{_choices(view)}"
        "</body></html>"
    )
