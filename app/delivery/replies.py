"""SMTP replies as plain data: the code, the enhanced status code (RFC 3463) and the text."""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 3463 §2: class.subject.detail, at the start of the reply text (RFC 2034 §3).
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """A server's (or our own synthesised) reply to one stage of an SMTP transaction."""

    code: int
    text: str
    enhanced: str | None = None
    stage: str | None = None

    @classmethod
    def parse(cls, code: int, text: str, *, stage: str | None = None) -> Reply:
        """Split the enhanced code off the text when the server gave one."""
        text = " ".join(text.split())
        match = _ENHANCED.match(text)
        if match is None:
            return cls(code=code, text=text, stage=stage)
        enhanced = ".".join(match.groups())
        return cls(code=code, text=text[match.end() :].strip(), enhanced=enhanced, stage=stage)

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.code < 300

    @property
    def is_transient(self) -> bool:
        """4xx: try again later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx: do not try again."""
        return self.code >= 500

    def __str__(self) -> str:
        """The reply as a server would print it."""
        parts = [str(self.code), self.enhanced or "", self.text]
        return " ".join(part for part in parts if part)


def synthetic(code: int, enhanced: str, text: str, *, stage: str | None = None) -> Reply:
    """A reply we make up ourselves (no server said it), e.g. for DNS or connection failures."""
    return Reply(code=code, text=text, enhanced=enhanced, stage=stage)
