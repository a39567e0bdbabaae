"""SMTP replies of the submission listener (RFC 5321 §4.2, enhanced codes from RFC 3463)."""

from __future__ import annotations


class Refusal(Exception):
    """A command or message the listener refuses; `reply` is the SMTP answer."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.enhanced = enhanced
        self.text = text

    @property
    def reply(self) -> str:
        """The reply line, e.g. `554 5.6.0 Message refused: ...`."""
        return f"{self.code} {self.enhanced} {self.text}"


def refused_content(text: str) -> Refusal:
    """554 5.6.0: the message content breaks a rule (RFC 3463 §3.7, media errors)."""
    return Refusal(554, "5.6.0", f"Message refused: {text}")


def not_stored() -> Refusal:
    """451 4.3.0: the database did not take the message (CHECKLIST 21); nothing was written,
    so the client's retry is safe."""
    return Refusal(451, "4.3.0", "Temporary failure: the message could not be stored; try again")


def too_many_connections(ip: str | None = None) -> Refusal:
    """421 at the greeting (RFC 5321 §3.1): 4.7.0 for one client's share, 4.3.2 (system not
    accepting network messages, RFC 3463) when the listener itself is full."""
    if ip is None:
        return Refusal(421, "4.3.2", "Too many connections; try again later")
    return Refusal(421, "4.7.0", f"Too many connections from {ip}; try again later")


# RFC 5321 §4.5.3.1.10 and RFC 3463 X.5.3: past the recipient limit, the client may continue
# with the rest in another transaction.
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
# RFC 6531 §3.4: an internationalised address needs MAIL FROM … SMTPUTF8.
NEEDS_SMTPUTF8 = "553 5.6.7 Non-ASCII address requires SMTPUTF8"
LOCAL_ERROR = "451 4.3.0 Local error in processing; please try again"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing transmission channel"
