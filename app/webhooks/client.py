"""One webhook POST: to a checked address, no redirects, bounded time, a short record."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass

import dns.asyncresolver
import httpx

from app.webhooks.destinations import (
    DestinationError,
    Target,
    addresses_of,
    allowed_addresses,
    parse_target,
)

log = logging.getLogger(__name__)

USER_AGENT = "Columba-Webhooks/1.0"
ERROR_BODY_BYTES = 1024
MAX_POOLS = 256
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class PostResult:
    """What came of one POST."""

    status: int | None  # the HTTP status, None when no response came
    error: str | None
    ip: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        """2xx only: a redirect is not followed and counts as a failure."""
        return self.status is not None and 200 <= self.status < 300


class WebhookClient:
    """Posts signed bodies, keeping connections open per endpoint host.

    Connections are made to checked addresses, so httpx pools them by address; a pool per
    host name keeps a TLS connection verified for one name from carrying another name's
    requests when both resolve to one address."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        *,
        timeout: float,
        allow_private: bool,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """Pools are made on first use, at most MAX_POOLS at a time. `verify`: the TLS
        context to check endpoints' certificates with (default: the system's CAs)."""
        self.resolver = resolver
        self.allow_private = allow_private
        self.timeout = timeout
        self.verify: ssl.SSLContext | bool = verify if verify is not None else True
        self._pools: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Future[None]] = set()
        # httpx logs every request's full URL at INFO (httpcore more at DEBUG), and webhook
        # URLs often carry a token in their path or query: post() logs its own line instead.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)

    def _pool(self, host: str) -> httpx.AsyncClient:
        """The host's client; the least recently used one is closed beyond MAX_POOLS."""
        client = self._pools.get(host)
        if client is None:
            client = self._pools[host] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                trust_env=False,  # no proxies from the environment: we choose the address
                verify=self.verify,
                limits=httpx.Limits(max_connections=10, max_keepalive_connections=4),
            )
            if len(self._pools) > MAX_POOLS:
                _, oldest = self._pools.popitem(last=False)
                closing = asyncio.ensure_future(oldest.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        self._pools.move_to_end(host)
        return client

    async def close(self) -> None:
        """Close every pooled connection."""
        for client in self._pools.values():
            await client.aclose()
        self._pools.clear()
        await asyncio.gather(*self._closing)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
        """POST `body` to `url`, connecting only to an address that passes the SSRF check.

        Never raises (but for cancellation): whatever goes wrong is a failed attempt, which the
        dispatcher records, backs off and eventually disables the endpoint for."""
        began = time.perf_counter()
        try:
            target = parse_target(url)
            addresses = allowed_addresses(
                await addresses_of(self.resolver, target.host),
                allow_private=self.allow_private,
                host=target.host,
            )
        except DestinationError as exc:
            return PostResult(None, f"refused: {exc}", None, _elapsed(began))
        try:
            result = await self._send(target, addresses[0], body, headers, began)
        except Exception as exc:  # whatever it is, it is the endpoint's failed attempt
            # Only the exception's type: its text could quote the URL.
            log.warning("webhook POST to %s failed: %s", target.origin, type(exc).__name__)
            error = f"request failed: {type(exc).__name__}"
            return PostResult(None, error, addresses[0], _elapsed(began))
        outcome = result.status if result.status is not None else result.error
        log.info("webhook POST to %s: %s in %d ms", target.origin, outcome, result.duration_ms)
        return result

    async def _send(
        self, target: Target, address: str, body: bytes, headers: dict[str, str], began: float
    ) -> PostResult:
        """The POST itself, to `address`, with the URL's host in Host and SNI."""
        request_headers = {
            **headers,
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        http = self._pool(target.host)
        request = http.build_request(
            "POST",
            target.url_for(address),
            content=body,
            headers=request_headers,
            extensions={"sni_hostname": target.host},
        )
        try:
            response = await http.send(request, stream=True)
            try:
                error = await _error_of(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return PostResult(None, "timed out", address, _elapsed(began))
        except httpx.HTTPError as exc:
            return PostResult(None, f"{type(exc).__name__}: {exc}", address, _elapsed(began))
        return PostResult(response.status_code, error, address, _elapsed(began))


async def _error_of(response: httpx.Response) -> str | None:
    """A short description of a non-2xx answer, from at most the first KB of its body.

    The body is read to its end when short, so the connection can be reused."""
    head = b""
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) > MAX_BODY_BYTES:
            break  # a long answer is not worth reading: the connection is closed instead
    if 200 <= response.status_code < 300:
        return None
    if 300 <= response.status_code < 400:
        location = response.headers.get("location", "")
        return f"redirect to {location[:200]!r} not followed"
    text = head[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
    return f"HTTP {response.status_code}" + (f": {text[:200]}" if text else "")


def _elapsed(began: float) -> int:
    """Milliseconds since `began`."""
    return int((time.perf_counter() - began) * 1000)
