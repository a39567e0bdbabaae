"""Field types that enforce mail's rules at the API edge: addresses and header-safe text."""

from __future__ import annotations

import re
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

# RFC 5322 §2.2: a header field name is printable US-ASCII except the colon.
HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_FORBIDDEN_IN_HEADERS = re.compile(r"[\r\n\x00]")


def no_line_breaks(value: str) -> str:
    """Refuse CR, LF and NUL: in a header they would start a new header (injection)."""
    if _FORBIDDEN_IN_HEADERS.search(value):
        raise ValueError("must not contain CR, LF or NUL characters")
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


HeaderText = Annotated[str, AfterValidator(no_line_breaks)]
EmailText = Annotated[str, AfterValidator(valid_email)]


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
