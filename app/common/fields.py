"""Field types that enforce mail's rules at the API edge: addresses and header-safe text."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from app.core import jsontext
from app.core.strict_json import scrubbed

# RFC 5322 §2.2: a header field name is printable US-ASCII except the colon. (\Z, not $,
# which also matches before a final newline: "X-A\n" would pass.)
HEADER_NAME = re.compile(r"[!-9;-~]+\Z")
# CR and LF would start a new header line (injection); the other controls (TAB apart) are not
# allowed in header text either (RFC 5322 §3.2.5), and some break lines in Python's writer.
# The same set app.delivery.mime refuses, so nothing accepted here can fail at delivery.
_FORBIDDEN_IN_HEADERS = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def header_safe(value: str) -> bool:
    """True when `value` may appear in a header field."""
    return _FORBIDDEN_IN_HEADERS.search(value) is None


def no_line_breaks(value: str) -> str:
    """Refuse CR, LF, NUL and the other control characters a header may not carry."""
    if _FORBIDDEN_IN_HEADERS.search(value):
        raise ValueError("must not contain CR, LF, NUL or other control characters")
    return value


@functools.lru_cache(maxsize=16384)
def valid_email(value: str) -> str:
    """A syntactically valid address (no DNS lookups), normalised: domain lower-cased.

    Memoised: a pure function of its argument, and the same senders and many of the same
    recipients come back request after request (email-validator cost ~0.1 ms an address)."""
    value = no_line_breaks(value.strip())
    try:
        # test_environment=True admits RFC 2606 `.test` domains (they never resolve publicly,
        # so accepting them is harmless) while other special-use names stay refused.
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email address {value!r}: {exc}") from exc
    return result.normalized


HeaderText = Annotated[
    str,
    AfterValidator(no_line_breaks),
    Field(json_schema_extra={"pattern": "^[^\\x00-\\x08\\n-\\x1f\\x7f\\x85\\u2028\\u2029]*$"}),
]
EmailText = Annotated[
    str, AfterValidator(valid_email), Field(json_schema_extra={"format": "email"})
]


class EmailAddress(BaseModel):
    """An address with an optional display name."""

    model_config = ConfigDict(extra="forbid")

    email: EmailText
    name: HeaderText | None = Field(default=None, max_length=256)


def _address_from_string(value: object) -> object:
    """Accept `"a@example.com"` wherever `{"email": "a@example.com"}` is accepted."""
    return {"email": value} if isinstance(value, str) else value


Address = Annotated[EmailAddress, BeforeValidator(_address_from_string)]


def _not_null(value: object) -> object:
    """Refuse an explicit null for a field that may be left out but never emptied."""
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


# For PATCH bodies: `Annotated[T | SkipJsonSchema[None], NotNull] = None` may be left out (and
# is None then), but `null` is refused, and the schema does not offer it.
NotNull = BeforeValidator(_not_null)


def header_name(value: str) -> str:
    """A valid custom header name."""
    if not HEADER_NAME.match(value):
        raise ValueError(f"invalid header name {value!r}")
    return value


# What readers show of stored data: a lone surrogate stored before the edge refused them is
# shown as U+FFFD, so that no page holding one fails to serialise.
StoredJson = Annotated[dict[str, Any], AfterValidator(scrubbed)]
StoredText = Annotated[str, AfterValidator(scrubbed)]


# Integers that reach SQL must fit its columns: BIGINT for ids and offsets.
MAX_INT64 = 2**63 - 1


def as_int64(text: str) -> int | None:
    """`text` as a non-negative BIGINT, or None when it is not one (`"²".isdigit()` is True,
    and int() refuses more than 4,300 digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_INT64)):
        return None
    value = int(text)
    return value if value <= MAX_INT64 else None


MAX_UNIX_TIME = 253402300799  # 9999-12-31T23:59:59Z, the last time a datetime can hold


def in_utc(value: datetime) -> datetime:
    """The same instant in UTC (naive times are UTC); ValueError when it has none, as
    `0001-01-01T00:00:00+14:00`, which lies before the first instant a datetime holds."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("must be a time between 0001-01-01 and 9999-12-31 in UTC") from exc


UtcTime = Annotated[datetime, AfterValidator(in_utc)]
AwareUtcTime = Annotated[AwareDatetime, AfterValidator(in_utc)]


# SendGrid caps custom_args at 10,000 bytes (tsg_mail_v3.yaml); Columba's metadata is the same
# thing, copied into every event of every recipient, so it is capped alike.
MAX_CUSTOM_ARGS_BYTES = 10_000


def json_size(value: Any) -> int:
    """The size of `value` as compact UTF-8 JSON, as SendGrid counts custom_args."""
    return jsontext.size(value)


def capped_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse metadata over MAX_CUSTOM_ARGS_BYTES, with the words v3 uses for custom_args."""
    if json_size(value) > MAX_CUSTOM_ARGS_BYTES:
        raise ValueError("The metadata parameter may not exceed 10,000 bytes.")
    return value
