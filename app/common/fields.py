"""Field types that enforce mail's rules at the API edge: addresses and header-safe text."""

from __future__ import annotations

import re
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from app.core.strict_json import scrubbed

# RFC 5322 §2.2: a header field name is printable US-ASCII except the colon.
HEADER_NAME = re.compile(r"^[!-9;-~]+$")
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


def valid_email(value: str) -> str:
    """A syntactically valid address (no DNS lookups), normalised: domain lower-cased."""
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


def header_name(value: str) -> str:
    """A valid custom header name."""
    if not HEADER_NAME.match(value):
        raise ValueError(f"invalid header name {value!r}")
    return value


# What readers show of stored data: a lone surrogate stored before the edge refused them is
# shown as U+FFFD, so that no page holding one fails to serialise.
StoredJson = Annotated[dict[str, Any], AfterValidator(scrubbed)]
StoredText = Annotated[str, AfterValidator(scrubbed)]
