"""The mailbox provider behind a destination, from a fixed list: a bounded metric label."""

from __future__ import annotations

OTHER = "other"

# Recipient domains and MX host suffixes of the large providers; anything else is `other`, so
# the label has at most len(PROVIDERS) + 1 values however many domains mail goes to.
PROVIDERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gmail", ("gmail.com", "googlemail.com", "google.com")),
    ("outlook", ("outlook.com", "hotmail.com", "live.com", "msn.com", "protection.outlook.com")),
    ("yahoo", ("yahoo.com", "yahoodns.net", "ymail.com", "aol.com", "rocketmail.com")),
    ("icloud", ("icloud.com", "me.com", "mac.com")),
    ("comcast", ("comcast.net",)),
    ("proton", ("proton.me", "protonmail.com", "protonmail.ch")),
    ("gmx", ("gmx.com", "gmx.de", "gmx.net", "web.de")),
    ("yandex", ("yandex.ru", "yandex.com", "yandex.net")),
    ("mailru", ("mail.ru",)),
    ("zoho", ("zoho.com", "zohomail.com")),
    ("fastmail", ("fastmail.com", "messagingengine.com")),
)

_BY_SUFFIX = {suffix: name for name, suffixes in PROVIDERS for suffix in suffixes}


def provider_of(domain: str, mx_host: str | None = None) -> str:
    """`gmail`, `outlook`, `yahoo`, … by the recipient's domain or its MX host; else `other`."""
    for name in (domain, mx_host):
        if name:
            found = _provider_of_name(name.lower().rstrip("."))
            if found is not None:
                return found
    return OTHER


def _provider_of_name(name: str) -> str | None:
    """The provider whose suffix `name` is or ends with."""
    labels = name.split(".")
    for start in range(len(labels) - 1):
        found = _BY_SUFFIX.get(".".join(labels[start:]))
        if found is not None:
            return found
    return None
