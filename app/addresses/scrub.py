"""Replacing one address inside stored values: text, bytes and JSON documents."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# RFC 2606 §2: `.invalid` never resolves, so the stand-in is a valid address that no copy
# can ever reach; headers that named the erased address stay well-formed.
PLACEHOLDER = "erased@erased.invalid"


@dataclass(frozen=True, slots=True)
class Scrubber:
    """Finds and replaces one address, whatever its case."""

    address: str

    @property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.address), re.IGNORECASE)

    @property
    def needles(self) -> tuple[str, ...]:
        """The lower-cased forms the address takes in stored text: as written, and as JSON
        writes it with non-ASCII characters escaped."""
        plain = self.address.lower()
        escaped = json.dumps(plain)[1:-1]
        return (plain,) if escaped == plain else (plain, escaped.lower())

    def names(self, value: Any) -> bool:
        """Whether `value` (text, bytes or a JSON document) contains the address."""
        if value is None:
            return False
        if isinstance(value, bytes):
            return self.address.lower().encode() in value.lower()
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return self.address.lower() in text.lower()

    def text(self, value: str | None) -> str | None:
        """`value` with every occurrence replaced by the placeholder."""
        return None if value is None else self._pattern.sub(PLACEHOLDER, value)

    def raw(self, value: bytes | None) -> bytes | None:
        """Bytes (a raw MIME message) with every occurrence replaced."""
        if value is None:
            return None
        pattern = re.compile(re.escape(self.address.encode()), re.IGNORECASE)
        return pattern.sub(PLACEHOLDER.encode(), value)

    def document(self, value: Any) -> Any:
        """A JSON document with every string scrubbed; an object whose `email` is the address
        also loses its `name` (a display name is personal data too)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.document(item) for item in value]
        if isinstance(value, dict):
            scrubbed = {self.text(key) or "": self.document(item) for key, item in value.items()}
            email = value.get("email")
            if isinstance(email, str) and email.lower() == self.address.lower() and "name" in value:
                scrubbed["name"] = None
            return scrubbed
        return value
