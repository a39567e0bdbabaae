"""One recipient's copy of a message: the stored content with that recipient's personalisation
applied (template rendered with their data, substitutions, their subject, headers and To/Cc).

A recipient's `personalization` (a JSON object on its row) may hold:
  copy            names the copy; recipients of one copy share its Message-ID and bytes
  to, cc, from    the addresses this copy shows (objects with email and name)
  subject         a literal subject for this copy (never rendered as a template)
  headers         extra or overriding header fields
  substitutions   SendGrid's tag → value replacements in subject, text and html
  data            the copy's own template data (`template_data` / `dynamic_template_data`),
                  over the message's shared `template_data` (stored once, on the message)
  custom_args     metadata carried into the events (not rendered)
  send_at         when the copy was scheduled (ISO 8601; not rendered)
Everything here is a pure function of the stored rows, so retries send identical bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from app.delivery.content import Address, MessageContent
from app.messages.dispatch import LoadedMessage, content_of, first_sent
from app.templates.engines import LimitExceeded, RenderLimits, render

# The keys that change the bytes of a copy; the others (custom_args, send_at) only travel
# into events, so copies that differ only there still share one SMTP transaction.
RENDER_KEYS = ("copy", "to", "cc", "from", "subject", "headers", "substitutions", "data")
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f]+")


def copy_message_id(message_id_header: str, copy: str | None) -> str:
    """The Message-ID of one personalised copy: the message's with the copy's name added."""
    if not copy:
        return message_id_header
    local, _, domain = message_id_header.strip("<>").partition("@")
    return f"<{local}.{copy.lower()}@{domain}>"


def render_inputs(personalization: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a personalisation that decides the bytes of a copy."""
    if not personalization:
        return {}
    return {key: personalization[key] for key in RENDER_KEYS if key in personalization}


def needs_rendering(loaded: LoadedMessage) -> bool:
    """True when copies can differ: a template, sections or footer to apply. Shared template
    data counts too: it was once kept in every recipient's row, which made each copy go
    through `content_for`, and its copies must stay byte for byte what they were."""
    message = loaded.message
    return bool(
        message.template_engine
        or message.sections
        or message.template_data
        or _footer(message.settings)
    )


def content_for(
    loaded: LoadedMessage, personalization: Mapping[str, Any] | None, limits: RenderLimits
) -> MessageContent:
    """The content one recipient is sent; raises RenderError when their template fails."""
    base = content_of(loaded)
    personal = dict(personalization or {})
    message = loaded.message
    data = {**(message.template_data or {}), **(personal.get("data") or {})}
    engine = message.template_engine
    subject = personal.get("subject")
    if subject is None:
        subject = _render(engine, base.subject, data, html=False, limits=limits)
    text = _render(engine, base.text, data, html=False, limits=limits)
    html = _render(engine, base.html, data, html=True, limits=limits)
    replacements = {**(personal.get("substitutions") or {}), **(message.sections or {})}
    subject, text, html = (
        _substitute(part, replacements, limits.max_output) for part in (subject, text, html)
    )
    text, html = _with_footer(text, html, _footer(message.settings))
    return MessageContent(
        message_id=copy_message_id(base.message_id, personal.get("copy")),
        date=_date(base.date, message.created_at, personal.get("send_at")),
        sender=_address(personal.get("from")) or base.sender,
        subject=_LINE_BREAKS.sub(" ", subject or ""),
        to=_addresses(personal.get("to")) or base.to,
        cc=_addresses(personal.get("cc")) or base.cc,
        reply_to=base.reply_to,
        text=text,
        html=html,
        alternatives=base.alternatives,  # sent as given: neither templates nor substitutions
        headers=_merged_headers(base.headers, personal.get("headers") or {}),
        attachments=base.attachments,
    )


def _date(base: datetime, accepted: datetime, send_at: str | None) -> datetime:
    """A copy scheduled on its own (a personalisation's send_at) is dated when it leaves."""
    return first_sent(accepted, datetime.fromisoformat(send_at)) if send_at else base


def _render(
    engine: str | None,
    source: str | None,
    data: dict[str, Any],
    *,
    html: bool,
    limits: RenderLimits,
) -> str | None:
    """Render one part when the message is a template; literal parts pass through."""
    if source is None or engine is None:
        return source
    return render(engine, source, data, html=html, limits=limits)


def _substitute(value: str | None, replacements: Mapping[str, Any], max_growth: int) -> str | None:
    """Replace every tag in one pass, longest first, so values are never re-substituted.
    Refused (LimitExceeded) before it is built when the part would grow by more than
    `max_growth` characters: a short tag repeated in a long body, each replaced by a long
    value, would otherwise build gigabytes."""
    if value is None or not replacements:
        return value
    tags = sorted(replacements, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(tag) for tag in tags if tag))
    values = {tag: str(replacement) for tag, replacement in replacements.items()}
    growth = 0
    for match in pattern.finditer(value):
        growth += len(values[match.group(0)]) - len(match.group(0))
        if growth > max_growth:
            raise LimitExceeded(
                f"the substitutions make the message more than {max_growth} characters longer"
            )
    return pattern.sub(lambda match: values[match.group(0)], value)


def _footer(settings: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """mail_settings.footer when it is enabled."""
    footer = ((settings or {}).get("mail_settings") or {}).get("footer") or {}
    return footer if footer.get("enable") else None


def _with_footer(
    text: str | None, html: str | None, footer: Mapping[str, Any] | None
) -> tuple[str | None, str | None]:
    """Append the footer as SendGrid does: after the text, before </body> in html."""
    if footer is None:
        return text, html
    if text is not None and footer.get("text"):
        text = f"{text}\n\n{footer['text']}"
    if html is not None and footer.get("html"):
        closing = html.lower().rfind("</body>")
        if closing >= 0:
            html = html[:closing] + footer["html"] + html[closing:]
        else:
            html = html + footer["html"]
    return text, html


def _address(value: Mapping[str, Any] | None) -> Address | None:
    return Address(email=value["email"], name=value.get("name")) if value else None


def _addresses(values: Sequence[Mapping[str, Any]] | None) -> tuple[Address, ...]:
    return tuple(Address(email=v["email"], name=v.get("name")) for v in values or ())


def _merged_headers(
    base: tuple[tuple[str, str], ...], personal: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The message's headers with the copy's added; a copy's header replaces one of the
    same name (compared without case, as header names are)."""
    overridden = {name.lower() for name in personal}
    kept = tuple((name, value) for name, value in base if name.lower() not in overridden)
    return kept + tuple(personal.items())
