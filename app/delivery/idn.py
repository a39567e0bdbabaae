"""Addresses as SMTP carries them: domains as IDNA A-labels (RFC 5890 §2.3.2.1), which every
server understands, so that SMTPUTF8 is needed only for a non-ASCII local part (RFC 6531 §3.2).
"""

from __future__ import annotations

import idna


def ascii_domain(domain: str) -> str:
    """The domain in A-label form, lower-cased: IDNA 2008 with UTS #46 mapping, as
    email-validator checks addresses (so `faß.de` is `xn--fa-hia.de`, not IDNA 2003's
    `fass.de`, another domain). ValueError (idna.IDNAError) when it is no valid IDN."""
    domain = domain.lower()
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True).decode("ascii")


def envelope_address(address: str) -> str:
    """`local@domain` with the domain in A-label form; the null path and address literals
    (`[192.0.2.1]`) as they are."""
    local, at, domain = address.rpartition("@")
    if not at or domain.startswith("["):
        return address
    try:
        return f"{local}@{ascii_domain(domain)}"
    except ValueError:  # never a validated address: ask for SMTPUTF8 rather than guess
        return address


def needs_smtputf8(address: str) -> bool:
    """True when only SMTPUTF8 can carry the address: a non-ASCII local part (RFC 6531 §3.3)."""
    return not envelope_address(address).isascii()
