"""A small authoritative DNS server on loopback (UDP and TCP), scripted per name for tests."""

from __future__ import annotations

import asyncio
import enum
from types import TracebackType
from typing import cast

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.reversename
import dns.rrset

TTL = 300
# RFC 1035: a UDP answer to a query without EDNS must fit 512 octets, else it is truncated.
_PLAIN_UDP_LIMIT = 512
_TCP_LIMIT = 65535
# One TXT character-string holds at most 255 octets (RFC 1035 §3.3.14).
_TXT_CHUNK = 255

_Records = dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]]


class _Fault(enum.Enum):
    """A scripted failure that replaces every answer for a name."""

    NXDOMAIN = enum.auto()
    SERVFAIL = enum.auto()
    TIMEOUT = enum.auto()


def _name(name: str) -> dns.name.Name:
    """Parse a test-given name; dnspython names compare case-insensitively."""
    return dns.name.from_text(name)


def split_txt(text: str) -> list[bytes]:
    """Split a TXT value into character-strings of at most 255 octets, as DKIM keys are."""
    raw = text.encode()
    return [raw[i : i + _TXT_CHUNK] for i in range(0, len(raw), _TXT_CHUNK)] or [b""]


def _max_size(query: dns.message.Message, *, tcp: bool) -> int:
    """The largest answer the client accepts on this transport."""
    if tcp:
        return _TCP_LIMIT
    return query.payload if query.edns >= 0 else _PLAIN_UDP_LIMIT


class _UDPProtocol(asyncio.DatagramProtocol):
    """Answers one DNS query per datagram."""

    def __init__(self, server: FakeDNS) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to send answers on."""
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Answer the query unless the name is scripted to time out."""
        reply = self._server.handle_wire(data, tcp=False)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        """Let stop() know the socket is really closed."""
        if not self.closed.done():
            self.closed.set_result(None)


class _TCPProtocol(asyncio.Protocol):
    """Answers length-prefixed DNS queries (RFC 1035 §4.2.2) on one TCP connection."""

    def __init__(self, server: FakeDNS) -> None:
        self._server = server
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection so stop() can close it."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._server.tcp_connections.add(self)

    def data_received(self, data: bytes) -> None:
        """Answer every complete query in the buffer."""
        self._buffer += data
        while len(self._buffer) >= 2:
            length = int.from_bytes(self._buffer[:2], "big")
            if len(self._buffer) < 2 + length:
                return
            wire = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            reply = self._server.handle_wire(wire, tcp=True)
            if reply is not None and self.transport is not None:
                self.transport.write(len(reply).to_bytes(2, "big") + reply)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection once its socket is closed."""
        self._server.tcp_connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)


class FakeDNS:
    """Authoritative DNS server for any name, answering what the test configured."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.queries: list[tuple[str, str]] = []
        self.tcp_queries = 0
        self.tcp_connections: set[_TCPProtocol] = set()
        self._records: dict[dns.name.Name, _Records] = {}
        self._faults: dict[dns.name.Name, _Fault] = {}
        self._udp: tuple[asyncio.DatagramTransport, _UDPProtocol] | None = None
        self._tcp: asyncio.Server | None = None

    async def __aenter__(self) -> FakeDNS:
        """Start serving."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        await self.stop()

    @property
    def nameserver(self) -> str:
        """The `ip:port` form that COLUMBA_DNS_NAMESERVERS takes."""
        return f"{self.host}:{self.port}"

    def resolver(self, lifetime: float = 2.0) -> dns.asyncresolver.Resolver:
        """A dnspython resolver that asks only this server."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.timeout = lifetime
        resolver.lifetime = lifetime
        return resolver

    async def start(self) -> None:
        """Bind UDP and TCP on the same port; `port` holds the real port afterwards."""
        # With port 0 the kernel picks a UDP port that may be taken for TCP: retry a few times.
        attempts = 20 if self.port == 0 else 1
        for attempt in range(attempts):
            try:
                await self._bind()
                return
            except OSError:
                if attempt == attempts - 1:
                    raise

    async def _bind(self) -> None:
        """Bind UDP first (maybe on a kernel-picked port), then TCP on that port."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self), local_addr=(self.host, self.port)
        )
        port: int = transport.get_extra_info("sockname")[1]
        try:
            self._tcp = await loop.create_server(lambda: _TCPProtocol(self), self.host, port)
        except OSError:
            transport.close()
            await protocol.closed
            raise
        self._udp = (transport, protocol)
        self.port = port

    async def stop(self) -> None:
        """Close the sockets and every open TCP connection; safe to call twice."""
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        connections = list(self.tcp_connections)
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        # Wait for connection_lost() so no socket outlives the test (ResourceWarning).
        await asyncio.gather(*(connection.closed for connection in connections))
        if self._udp is not None:
            transport, protocol = self._udp
            transport.close()
            await protocol.closed
            self._udp = None

    def _put(self, name: str, rdatas: list[dns.rdata.Rdata]) -> None:
        """Add records to a name, replacing any scripted fault (the last call wins)."""
        key = _name(name)
        self._faults.pop(key, None)
        records = self._records.setdefault(key, {})
        for rdata in rdatas:
            existing = records.setdefault(rdata.rdtype, [])
            if rdata not in existing:
                existing.append(rdata)

    def add_mx(self, domain: str, *hosts: tuple[int, str]) -> None:
        """Add MX records as (preference, exchange); exchange "." is a null MX (RFC 7505)."""
        self._put(
            domain,
            [
                dns.rdata.from_text("IN", "MX", f"{preference} {_name(exchange)}")
                for preference, exchange in hosts
            ],
        )

    def add_a(self, name: str, *ips: str) -> None:
        """Add A records."""
        self._put(name, [dns.rdata.from_text("IN", "A", ip) for ip in ips])

    def add_aaaa(self, name: str, *ips: str) -> None:
        """Add AAAA records."""
        self._put(name, [dns.rdata.from_text("IN", "AAAA", ip) for ip in ips])

    def add_ptr(self, ip: str, *names: str) -> None:
        """Add PTR records for an address (its in-addr.arpa / ip6.arpa name)."""
        reverse = dns.reversename.from_address(ip).to_text()
        self._put(reverse, [dns.rdata.from_text("IN", "PTR", str(_name(name))) for name in names])

    def add_txt(self, name: str, *texts: str) -> None:
        """Add one TXT record per text, splitting long texts into 255-octet strings."""
        self._put(
            name,
            [
                dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, split_txt(text))
                for text in texts
            ],
        )

    def _fault(self, name: str, fault: _Fault) -> None:
        """Replace everything known about a name with a scripted failure."""
        key = _name(name)
        self._records.pop(key, None)
        self._faults[key] = fault

    def set_nxdomain(self, name: str) -> None:
        """Answer NXDOMAIN for the name, whatever the type asked."""
        self._fault(name, _Fault.NXDOMAIN)

    def set_servfail(self, name: str) -> None:
        """Answer SERVFAIL for the name."""
        self._fault(name, _Fault.SERVFAIL)

    def set_timeout(self, name: str) -> None:
        """Never answer queries for the name."""
        self._fault(name, _Fault.TIMEOUT)

    def remove(self, name: str) -> None:
        """Forget records and faults of a name (it then answers NXDOMAIN)."""
        key = _name(name)
        self._records.pop(key, None)
        self._faults.pop(key, None)

    def reset(self) -> None:
        """Forget every name and the query log."""
        self._records.clear()
        self._faults.clear()
        self.queries.clear()
        self.tcp_queries = 0

    def handle_wire(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """Answer a query in wire format; None means stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a DNS query: a real server drops it as well
        if tcp:
            self.tcp_queries += 1
        response = self.answer(query)
        if response is None:
            return None
        # An oversized UDP answer is cut and flagged TC, so resolvers retry over TCP.
        return response.to_wire(max_size=_max_size(query, tcp=tcp), prefer_truncation=True)

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """Build the response to a parsed query, or None for a scripted timeout."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append((qname, dns.rdatatype.to_text(question.rdtype)))
        fault = self._faults.get(question.name)
        if fault is _Fault.TIMEOUT:
            return None
        if fault is _Fault.SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        records = self._records.get(question.name)
        if records is None:
            # Unknown names and set_nxdomain() names do not exist.
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        self._fill_answer(response, question.name, question.rdtype, records)
        return response

    @staticmethod
    def _fill_answer(
        response: dns.message.Message,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        records: _Records,
    ) -> None:
        """Copy the matching RRsets; none matching leaves a NODATA answer."""
        for stored_type, rdatas in records.items():
            if rdtype in (stored_type, dns.rdatatype.ANY):
                response.answer.append(dns.rrset.from_rdata_list(qname, TTL, rdatas))
