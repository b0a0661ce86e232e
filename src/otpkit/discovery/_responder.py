"""A small authoritative DNS responder on UDP, for ``otpkit demo`` and for tests.

:class:`Responder` answers from a table of names to IPv4 addresses it can change at any
time (:meth:`Responder.set_records`), so :class:`~otpkit.discovery.DnsA` runs unchanged
against it - no dnsmasq, no root, no ``/etc/hosts``. What it answers:

* an ``A`` query for a name in the table: NOERROR with the name's addresses (TTL 0),
  NOERROR without answers when the name's list is empty;
* any other type of query for a name in the table: NOERROR without answers;
* a name not in the table: NXDOMAIN;
* a packet that does not parse as a query: nothing (the asker times out).

UDP only: the answers stay far below 512 bytes, so a resolver never retries over TCP.
The responder is a daemon thread of the program that starts it; :meth:`Responder.close`
stops it and closes its socket.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable, Mapping

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["Responder"]

log = logging.getLogger("otpkit.discovery")

_POLL = 0.2  # seconds the serving thread waits for a packet before it checks for close()


def _table(records: Mapping[str, Iterable[str]]) -> dict[dns.name.Name, tuple[str, ...]]:
    table: dict[dns.name.Name, tuple[str, ...]] = {}
    for name, addresses in records.items():
        if isinstance(addresses, str):
            raise ValueError(f"records[{name!r}]: expected a list of addresses, not a str")
        try:
            ips = tuple(str(ipaddress.IPv4Address(a)) for a in addresses)
        except ValueError as exc:
            raise ValueError(f"records[{name!r}]: expected IPv4 addresses ({exc})") from None
        try:
            table[dns.name.from_text(name, origin=dns.name.root)] = ips
        except dns.exception.DNSException as exc:
            raise ValueError(f"records: {name!r} is not a DNS name ({exc})") from None
    return table


class Responder:
    """Answers A queries for ``records`` (``{name: [ipv4, ...]}``) on UDP ``host:port``.

    ``port=0`` takes a free port; :attr:`port` says which. Started by :meth:`start`
    (returns self), stopped by :meth:`close`; also a context manager.

    Raises:
        ValueError: a name or an address of ``records`` is malformed (from the
            constructor and :meth:`set_records`).
        OSError: the address cannot be bound (from :meth:`start`).
    """

    def __init__(
        self, records: Mapping[str, Iterable[str]], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._table = _table(records)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port
        self.queries = 0

    def start(self) -> Responder:
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(_POLL)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(
            target=self._serve, daemon=True, name=f"otpkit-dns-{self.host}:{self.port}"
        )
        self._thread.start()
        return self

    def set_records(self, records: Mapping[str, Iterable[str]]) -> None:
        """Serve ``records`` from now on (the whole table is replaced)."""
        table = _table(records)
        with self._lock:
            self._table = table

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving and close the socket; waits up to ``timeout`` for the thread."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> Responder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query packet, or None for a packet that is no query."""
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError):
            return None
        if query.flags & dns.flags.QR or len(query.question) != 1:
            return None
        question = query.question[0]
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        with self._lock:
            ips = self._table.get(question.name)
        if ips is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A and ips:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 0, dns.rdataclass.IN, "A", list(ips))
            )
        return bytes(response.to_wire())

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._closed.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return  # closed under us
            reply = self.answer(wire)
            if reply is None:
                log.debug("dns responder: ignored a packet from %s that is no query", peer)
                continue
            self.queries += 1
            try:
                sock.sendto(reply, peer)
            except OSError as exc:
                log.debug("dns responder: could not answer %s: %s", peer, exc)
