"""Where a webhook may be sent: URL rules and the address check against SSRF.

The check runs on the address actually connected to: the host is resolved once, each address
is checked, and the connection goes to that checked address (with the original Host header and
TLS server name), so a DNS answer that changes in between (rebinding) cannot redirect us to a
private address (CHECKLIST 44)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception

from app.delivery.addresses import is_public_address
from app.delivery.resolver import DnsTemporaryError, lookup

MAX_URL_LENGTH = 2048


class DestinationError(ValueError):
    """A URL we will not send to, and why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL split into what the connection needs."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    def url_for(self, address: str) -> str:
        """The URL with the host replaced by a resolved address."""
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def origin(self) -> str:
        """scheme://host:port, what may be logged: paths and queries often carry tokens."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def host_header(self) -> str:
        """The Host header the endpoint expects."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str) -> Target:
    """Validate the URL's form: http(s), a host, no credentials, nothing unprintable."""
    if len(url) > MAX_URL_LENGTH:
        raise DestinationError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    _refuse_unprintable(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationError(f"invalid URL: {exc}") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise DestinationError("the URL must be http:// or https:// with a host name")
    if parts.username or parts.password:
        raise DestinationError("the URL must not carry credentials; use the signature instead")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(
        url=url,
        scheme=parts.scheme,
        host=parts.hostname.lower(),
        port=port or (443 if parts.scheme == "https" else 80),
        path=path,
    )


def _refuse_unprintable(url: str) -> None:
    """Whitespace, control characters (C0, DEL, C1), line and paragraph separators, format
    characters and lone surrogates have no place in a URL (RFC 3986 §2 allows none of them
    unencoded), and an HTTP client would refuse them later at every delivery."""
    for char in url:
        if char.isspace() or not char.isprintable():
            raise DestinationError(
                "the URL must not contain whitespace or control characters "
                f"(found U+{ord(char):04X}); percent-encode them"
            )


async def addresses_of(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """The host's addresses (an IP literal is its own); raises DestinationError when none."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        found = await lookup(resolver, host, "A") or await lookup(resolver, host, "AAAA") or []
    except DnsTemporaryError as exc:
        raise DestinationError(f"{host} could not be resolved: {exc}") from exc
    except (dns.exception.DNSException, ValueError) as exc:
        # Empty or overlong labels, names IDNA refuses: not a name DNS can look up.
        raise DestinationError(f"{host} is not a valid host name ({type(exc).__name__})") from exc
    if not found:
        raise DestinationError(f"{host} does not resolve to any address")
    return found


def allowed_addresses(addresses: list[str], *, allow_private: bool, host: str) -> list[str]:
    """The addresses we may connect to; DestinationError when none is left."""
    usable = addresses if allow_private else [a for a in addresses if is_public_address(a)]
    if not usable:
        raise DestinationError(
            f"{host} resolves only to loopback, private, link-local or otherwise non-public "
            "addresses, which webhooks may not be sent to"
        )
    return usable


async def check_url(
    resolver: dns.asyncresolver.Resolver, url: str, *, allow_private: bool
) -> Target:
    """Validate a URL given through the API, resolving its host now (it is checked again on
    every connection)."""
    target = parse_target(url)
    allowed_addresses(
        await addresses_of(resolver, target.host), allow_private=allow_private, host=target.host
    )
    return target
