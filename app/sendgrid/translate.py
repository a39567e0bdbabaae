"""From a v3 mail send body to a `Submission`, with SendGrid's limits and error texts.

Errors carry SendGrid's messages and field paths (`personalizations.0.to.1.email`), so
code written against SendGrid's answers keeps working.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from app.common import headers as custom_headers
from app.common.fields import (
    MAX_CUSTOM_ARGS_BYTES,
    MAX_UNIX_TIME,
    EmailAddress,
    header_name,
    header_safe,
    json_size,
)
from app.core import strict_json
from app.core.errors import BadRequest, ErrorItem, field_path
from app.messages import attachments as attachment_rules
from app.messages.submission import FileData, Personalization, Submission
from app.sendgrid import schemas
from app.suppressions.models import SuppressionType

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
MAX_SUBSTITUTIONS_BYTES = 10_000
# SendGrid refuses these headers; Columba also writes Date, Message-ID and MIME-Version.
SENDGRID_RESERVED = frozenset(
    {
        "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
        "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
    }
)  # fmt: skip

FROM_REQUIRED = (
    "The from object must be provided for every email send. It is an object that requires the "
    'email parameter, but may also contain a name parameter.  e.g. {"email" : '
    '"example@example.com"}  or {"email" : "example@example.com", "name" : '
    '"Example Recipient"}.'
)
PERSONALIZATIONS_REQUIRED = (
    "The personalizations field is required and must have at least one personalization."
)
TO_REQUIRED = (
    "The to array is required for all personalization objects, and must have at least one "
    "email object with a valid email address."
)
CONTENT_REQUIRED = (
    "Unless a valid template_id is provided, the content parameter is required. There must be "
    "at least one defined content block. We typically suggest both text/plain and text/html "
    "blocks are included, but only one block is required."
)
TOO_MANY_RECIPIENTS = (
    "The total number of recipients must be no more than 1000. This includes all recipients "
    "defined within the to, cc, and bcc parameters, across each object that you include in "
    "the personalizations array."
)
SENDER_IDENTITY = (
    "The from address does not match a verified Sender Identity. Mail cannot be sent until "
    "this error is resolved."
)
BYPASS = {
    "bypass_bounce_management": frozenset({SuppressionType.BOUNCE}),
    "bypass_spam_management": frozenset({SuppressionType.COMPLAINT}),
    "bypass_unsubscribe_management": frozenset({SuppressionType.UNSUBSCRIBE}),
    "bypass_list_management": frozenset(SuppressionType),
}


def parse(body: bytes) -> schemas.MailSend:
    """The body as a MailSend, or 400 with SendGrid's texts for every problem found."""
    try:
        document = strict_json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("Bad Request") from exc
    except strict_json.JsonRefused as exc:
        raise BadRequest(exc.message, exc.field) from exc
    if not isinstance(document, dict):
        raise BadRequest("Bad Request")
    try:
        return schemas.MailSend.model_validate(document)
    except ValidationError as exc:
        items = _deduplicated(_sendgrid_error(error) for error in exc.errors())
        raise BadRequest(items[0].message, errors=items) from exc


def _deduplicated(items: Iterator[ErrorItem]) -> list[ErrorItem]:
    seen: dict[tuple[str, str | None], ErrorItem] = {}
    for item in items:
        seen.setdefault((item.message, item.field), item)
    return list(seen.values())


def _sendgrid_error(error: Mapping[str, Any]) -> ErrorItem:
    """One pydantic error in SendGrid's words where SendGrid has words for it."""
    location = tuple(error.get("loc", ()))
    path = field_path(location)
    kind = error.get("type", "")
    if location[:1] == ("personalizations",) and len(location) == 1:
        return ErrorItem(PERSONALIZATIONS_REQUIRED, "personalizations")
    if location[:1] == ("from",) and (len(location) == 1 or kind == "missing"):
        return ErrorItem(FROM_REQUIRED, "from.email")
    if location == ("from", "email"):
        return ErrorItem("The from email does not contain a valid address.", "from.email")
    if len(location) == 3 and location[0] == "personalizations" and location[2] == "to":
        return ErrorItem(TO_REQUIRED, path)
    if location[-1:] == ("email",):
        return ErrorItem("Does not contain a valid address.", path)
    if location[:1] == ("content",) and location[-1:] in (("value",), ("type",)):
        name = location[-1]
        return ErrorItem(
            f"The content {name} must be a string at least one character in length.", path
        )
    if location[:1] == ("attachments",) and location[-1:] in (("content",), ("filename",)):
        return ErrorItem(f"The attachment {location[-1]} parameter is required.", path)
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return ErrorItem(message, path)


def to_submission(mail: schemas.MailSend) -> Submission:
    """The request as a Submission; 400 with every rule it breaks."""
    problems = list(_problems(mail))
    if problems:
        raise BadRequest(problems[0].message, errors=problems)
    text, html, alternatives = _bodies(mail.content)
    return Submission(
        sender=_address(mail.from_),
        personalizations=tuple(_personalization(p, i) for i, p in enumerate(mail.personalizations)),
        subject=mail.subject,
        text=text,
        html=html,
        alternatives=alternatives,
        reply_to=tuple(
            _address(a) for a in ([mail.reply_to] if mail.reply_to else mail.reply_to_list)
        ),
        headers=_strings(mail.headers),
        attachments=tuple(_file(a) for a in mail.attachments),
        categories=tuple(mail.categories),
        custom_args=_strings(mail.custom_args),
        template_id=mail.template_id,
        sections=dict(mail.sections),
        send_at=_time(mail.send_at),
        batch_id=mail.batch_id,
        asm_group_id=mail.asm.group_id if mail.asm else None,
        groups_to_display=tuple(mail.asm.groups_to_display) if mail.asm else (),
        bypass=_bypass(mail.mail_settings),
        # SendGrid: only bypass_list_management bypasses group unsubscribes.
        bypass_groups=bool(
            mail.mail_settings and _enabled(mail.mail_settings.bypass_list_management)
        ),
        settings=_settings(mail),
        sandbox=bool(
            mail.mail_settings
            and mail.mail_settings.sandbox_mode
            and mail.mail_settings.sandbox_mode.enable
        ),
    )


def _problems(mail: schemas.MailSend) -> Iterator[ErrorItem]:
    """Every rule of SendGrid's that the request breaks."""
    yield from _personalization_problems(mail.personalizations)
    yield from _dynamic_template_problems(mail)
    yield from _content_problems(mail)
    yield from _header_problems(mail.headers, "headers")
    yield from _category_problems(mail.categories)
    yield from _string_values(mail.custom_args, "custom_args")
    if json_size(mail.custom_args) > MAX_CUSTOM_ARGS_BYTES:
        yield ErrorItem("The custom_args parameter may not exceed 10,000 bytes.", "custom_args")
    yield from _attachment_problems(mail.attachments)
    if mail.reply_to is not None and mail.reply_to_list:
        yield ErrorItem("You may use either reply_to or reply_to_list, but not both.", "reply_to")
    if mail.ip_pool_name is not None and not 2 <= len(mail.ip_pool_name) <= 64:
        yield ErrorItem("The ip_pool_name must be between 2 and 64 characters.", "ip_pool_name")
    yield from _bypass_problems(mail.mail_settings)
    times = [("send_at", mail.send_at)] + [
        (f"personalizations.{i}.send_at", p.send_at) for i, p in enumerate(mail.personalizations)
    ]
    for path, value in times:
        if value is not None and not 0 <= value <= MAX_UNIX_TIME:
            yield ErrorItem("The send_at parameter must be a valid Unix timestamp.", path)


def _personalization_problems(
    personalizations: Sequence[schemas.Personalization],
) -> Iterator[ErrorItem]:
    if len(personalizations) > MAX_PERSONALIZATIONS:
        yield ErrorItem(
            "The personalizations field may contain at most "
            f"{MAX_PERSONALIZATIONS} personalizations.",
            "personalizations",
        )
    total = sum(len(p.to) + len(p.cc) + len(p.bcc) for p in personalizations)
    if total > MAX_RECIPIENTS:
        yield ErrorItem(TOO_MANY_RECIPIENTS, "personalizations")
    for index, personal in enumerate(personalizations):
        path = f"personalizations.{index}"
        yield from _duplicates(personal, path)
        yield from _header_problems(personal.headers, f"{path}.headers")
        yield from _string_values(personal.substitutions, f"{path}.substitutions")
        yield from _string_values(personal.custom_args, f"{path}.custom_args")
        if json_size(personal.substitutions) > MAX_SUBSTITUTIONS_BYTES:
            yield ErrorItem(
                "The substitutions may not exceed 10,000 bytes per personalization.",
                f"{path}.substitutions",
            )
        if json_size(personal.custom_args) > MAX_CUSTOM_ARGS_BYTES:
            yield ErrorItem(
                "The custom_args parameter may not exceed 10,000 bytes.", f"{path}.custom_args"
            )


def _dynamic_template_problems(mail: schemas.MailSend) -> Iterator[ErrorItem]:
    """SendGrid refuses substitutions beside a dynamic template (tsg_mail_v3.yaml: they
    "should not be used in combination with a Dynamic Template"), with this error."""
    if not (mail.template_id or "").startswith("d-"):
        return
    for index, personal in enumerate(mail.personalizations):
        if personal.substitutions:
            yield ErrorItem(
                "Substitutions may not be used with dynamic templating",
                f"personalizations.{index}.substitutions",
            )


def _duplicates(personal: schemas.Personalization, path: str) -> Iterator[ErrorItem]:
    """SendGrid: each address once per personalization, across to, cc and bcc."""
    seen: set[str] = set()
    for kind in ("to", "cc", "bcc"):
        for address in getattr(personal, kind):
            key = address.email.lower()
            if key in seen:
                yield ErrorItem(
                    "Each email address in the personalization block should be unique between "
                    f"to, cc, and bcc. We found the first duplicate instance of [{address.email}] "
                    f"in the {path}.{kind} field.",
                    path,
                )
                return
            seen.add(key)


def _content_problems(mail: schemas.MailSend) -> Iterator[ErrorItem]:
    """Content is required without a template; text/plain, then text/html, once each."""
    if not mail.content and mail.template_id is None:
        yield ErrorItem(CONTENT_REQUIRED, "content")
    types = [_base_type(content.type) for content in mail.content]
    if len(set(types)) != len(types):
        yield ErrorItem(
            "If present, text/plain and text/html may only be provided once.", "content"
        )
    elif not _bodies_first(types):
        yield ErrorItem(
            "If present, text/plain and text/html may only be provided in this order, followed "
            "by any other content.",
            "content",
        )
    for index, content in enumerate(mail.content):
        problem = _alternative_problem(content.type)
        if problem is not None:
            yield ErrorItem(problem, f"content.{index}.type")
    subjects = all(p.subject for p in mail.personalizations)
    if mail.subject is None and mail.template_id is None and not subjects:
        yield ErrorItem(
            "The subject is required. You can get around this requirement if you use a "
            "template with a subject defined or if every personalization has a subject "
            "defined.",
            "subject",
        )


def _header_problems(headers: Mapping[str, Any], path: str) -> Iterator[ErrorItem]:
    for name, value in headers.items():
        if not isinstance(value, str):
            yield ErrorItem(
                f"Invalid type. Expected: string, given: {_json_type(value)}.", f"{path}.{name}"
            )
            continue
        try:
            header_name(name)
        except ValueError as exc:
            yield ErrorItem(str(exc), path)
            continue
        if custom_headers.is_reserved(name) or name.lower() in SENDGRID_RESERVED:
            yield ErrorItem(_reserved(name), f"{path}.{name}")
            continue
        problem = custom_headers.value_problem(name, value)
        if problem is not None:
            yield ErrorItem(problem, f"{path}.{name}")


def _reserved(name: str) -> str:
    """SendGrid's words, except for X-SMTPAPI, which SendGrid passes on and Columba refuses."""
    if name.lower() == custom_headers.SMTPAPI:
        return custom_headers.reserved_reason(name)
    return f"The header {name} is reserved and cannot be set."


def _category_problems(categories: Sequence[str]) -> Iterator[ErrorItem]:
    if len(categories) > MAX_CATEGORIES:
        yield ErrorItem(
            f"You may not have more than {MAX_CATEGORIES} categories per request.", "categories"
        )
    if len({c.lower() for c in categories}) != len(categories):
        yield ErrorItem("The categories must be unique.", "categories")
    for index, category in enumerate(categories):
        if len(category) > MAX_CATEGORY_LENGTH:
            yield ErrorItem(
                f"A category may not exceed {MAX_CATEGORY_LENGTH} characters.",
                f"categories.{index}",
            )
        elif not header_safe(category):
            yield ErrorItem(
                "Categories must not contain CR, LF, NUL or other control characters.",
                f"categories.{index}",
            )


def _string_values(values: Mapping[str, Any], path: str) -> Iterator[ErrorItem]:
    for name, value in values.items():
        if not isinstance(value, str):
            yield ErrorItem(
                f"Invalid type. Expected: string, given: {_json_type(value)}.", f"{path}.{name}"
            )


def _attachment_problems(files: Sequence[schemas.Attachment]) -> Iterator[ErrorItem]:
    for index, attachment in enumerate(files):
        path = f"attachments.{index}"
        try:
            data = base64.b64decode(attachment.content, validate=True)
        except (binascii.Error, ValueError):
            yield ErrorItem("The attachment content must be base64 encoded.", f"{path}.content")
            continue
        if attachment.disposition == "inline" and not attachment.content_id:
            yield ErrorItem(
                "The content_id parameter is required if disposition is set to inline.",
                f"{path}.content_id",
            )
        unwritable = custom_headers.attachment_problem(
            attachment.filename,
            attachment.type or "application/octet-stream",
            attachment.content_id,
        )
        if unwritable is not None:
            yield ErrorItem(unwritable, path)
            continue
        refusal = attachment_rules.refusal(attachment.filename, attachment.type or "", data)
        if refusal is not None:
            yield ErrorItem(f"The attachment cannot be sent: {refusal}.", f"{path}.filename")


def _bypass_problems(settings: schemas.MailSettings | None) -> Iterator[ErrorItem]:
    if settings is None or not _enabled(settings.bypass_list_management):
        return
    others = ("bypass_spam_management", "bypass_bounce_management", "bypass_unsubscribe_management")
    if any(_enabled(getattr(settings, name)) for name in others):
        yield ErrorItem(
            "The bypass_list_management filter cannot be combined with other bypass filters.",
            "mail_settings.bypass_list_management",
        )


def _enabled(switch: schemas.Switch | None) -> bool:
    return bool(switch and switch.enable)


def _bypass(settings: schemas.MailSettings | None) -> frozenset[SuppressionType]:
    """Which suppression lists this send ignores (mail_settings.bypass_*)."""
    if settings is None:
        return frozenset()
    chosen: frozenset[SuppressionType] = frozenset()
    for name, types in BYPASS.items():
        if _enabled(getattr(settings, name)):
            chosen |= types
    return chosen


def _bodies_first(types: Sequence[str]) -> bool:
    """text/plain, then text/html, before any other type (each optional; duplicates are
    refused before this is asked)."""
    bodies = [kind for kind in types if kind in ("text/plain", "text/html")]
    return types[: len(bodies)] == bodies and bodies != ["text/html", "text/plain"]


def _base_type(content_type: str) -> str:
    """`text/calendar; method=REQUEST` → `text/calendar`."""
    return content_type.partition(";")[0].strip().lower()


def _alternative_problem(content_type: str) -> str | None:
    """Why a content type cannot be sent as an alternative body, or None when it can.

    Text only: the value is a string, sent in the message's charset (RFC 2046 §4.1)."""
    kind = _base_type(content_type)
    if kind in ("text/plain", "text/html"):
        return None
    if custom_headers.alternative_problem(content_type) is not None:
        return f"The content type {content_type} cannot be sent: give a text/* MIME type."
    return None


def _bodies(
    contents: Sequence[schemas.Content],
) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
    """text/plain, text/html and the other content types in the order given: SendGrid sends
    them in that order (its rule: "text/plain and text/html ... followed by any other")."""
    by_type = {_base_type(content.type): content.value for content in contents}
    others = tuple(
        (content.type, content.value)
        for content in contents
        if _base_type(content.type) not in ("text/plain", "text/html")
    )
    return by_type.get("text/plain"), by_type.get("text/html"), others


def _personalization(personal: schemas.Personalization, index: int) -> Personalization:
    return Personalization(
        to=tuple(_address(a) for a in personal.to),
        cc=tuple(_address(a) for a in personal.cc),
        bcc=tuple(_address(a) for a in personal.bcc),
        sender=_address(personal.from_) if personal.from_ else None,
        subject=personal.subject,
        headers=_strings(personal.headers),
        substitutions=_strings(personal.substitutions),
        data=personal.dynamic_template_data,
        custom_args=_strings(personal.custom_args),
        send_at=_time(personal.send_at),
        field_path=f"personalizations.{index}",
    )


def _address(address: schemas.MailAddress) -> EmailAddress:
    """The same address as the accept service's type (already validated: not again)."""
    return EmailAddress.model_construct(email=address.email, name=address.name)


def _file(attachment: schemas.Attachment) -> FileData:
    return FileData(
        filename=attachment.filename,
        content_type=attachment.type or "application/octet-stream",
        data=base64.b64decode(attachment.content),
        content_id=attachment.content_id,
        disposition=attachment.disposition,
    )


def _settings(mail: schemas.MailSend) -> dict[str, Any]:
    """What is stored as given: mail_settings, tracking_settings, asm, ip_pool_name."""
    stored = {
        "mail_settings": mail.mail_settings.model_dump(exclude_none=True)
        if mail.mail_settings
        else None,
        "tracking_settings": mail.tracking_settings,
        "asm": mail.asm.model_dump() if mail.asm else None,
        "ip_pool_name": mail.ip_pool_name,
    }
    return {key: value for key, value in stored.items() if value is not None}


def _time(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _strings(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in values.items()}


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), "string")
