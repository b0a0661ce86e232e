"""Discovery strategies: where the peers of this node are, according to DNS or a fixed list.

Each strategy's ``lookup()`` performs one query and returns a :class:`LookupResult`. A
result is either good (``ok=True``, the full set of peers the source lists now, possibly
empty) or failed (``ok=False``, with ``error`` saying what went wrong). The distinction
matters: a failed lookup must prune nobody (see ARCHITECTURE.md, *Discovery*), so a lookup
never reports an error as an empty set.

How DNS outcomes map (dnspython 2.x):

* NOERROR with records -> good, the peers;
* NXDOMAIN, or NOERROR without records of the asked type -> good, empty set (the service
  exists in DNS but has no endpoints, or does not exist at all: both mean "nobody");
* SERVFAIL, REFUSED and other error codes, timeouts, socket errors, answers that do not
  parse -> failed;
* a truncated UDP answer is retried over TCP (dnspython's ``resolve`` does this); a TCP
  retry that fails, or is truncated again, -> failed. A truncated answer is never used.

Strategies do no logging and keep no state between lookups apart from their settings; a
resolver is built for each lookup, so a changed ``/etc/resolv.conf`` is picked up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import dns.exception
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

__all__ = [
    "DnsA",
    "DnsSrv",
    "LookupResult",
    "Peer",
    "Static",
    "Strategy",
]


@dataclass(frozen=True, slots=True)
class Peer:
    """A node to connect to: its node name (``"app@host"``) and where its dist port is."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class LookupResult:
    """One lookup's outcome. ``ok=False`` means "no information", never "no peers"."""

    ok: bool
    peers: frozenset[Peer] = frozenset()
    error: str | None = None

    @classmethod
    def good(cls, peers: Iterable[Peer]) -> LookupResult:
        return cls(ok=True, peers=frozenset(peers), error=None)

    @classmethod
    def failed(cls, error: str) -> LookupResult:
        return cls(ok=False, peers=frozenset(), error=error)


class Strategy(Protocol):
    """What the dist layer polls: one blocking lookup per call."""

    def lookup(self) -> LookupResult: ...


# --------------------------------------------------------------------------------------
# Static
# --------------------------------------------------------------------------------------


def _parse_static(entry: str, default_port: int | None) -> Peer:
    """``"app@host"``, ``"app@host:port"``, ``"app@[v6]:port"`` or ``"app@v6"``."""
    app, sep, rest = entry.partition("@")
    if not sep or not app or not rest:
        raise ValueError(f"static peer {entry!r} is not of the form 'app@host[:port]'")
    port: int | None = default_port
    if rest.startswith("["):
        host, close, tail = rest[1:].partition("]")
        if not close or not host or (tail and not tail.startswith(":")):
            raise ValueError(f"static peer {entry!r}: bad bracketed address")
        if tail:
            port = _parse_port(entry, tail[1:])
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        port = _parse_port(entry, port_text)
    else:  # a host name, an IPv4 address, or a bare IPv6 address (several colons)
        host = rest
    if not host:
        raise ValueError(f"static peer {entry!r} has an empty host")
    if port is None:
        raise ValueError(f"static peer {entry!r} has no port and Static() was given no port=")
    return Peer(name=f"{app}@{host}", host=host, port=port)


def _parse_port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"static peer {entry!r}: port {text!r} is not in 1..65535")
    return int(text)


class Static:
    """A fixed peer list. Entries are ``Peer`` objects or strings ``"app@host"`` (dist port
    ``port``) or ``"app@host:port"``. Bad entries raise ``ValueError`` here, not at lookup.
    """

    def __init__(self, names_or_peers: Iterable[str | Peer], port: int | None = None) -> None:
        peers: set[Peer] = set()
        for entry in names_or_peers:
            if isinstance(entry, Peer):
                peers.add(entry)
            elif isinstance(entry, str):
                peers.add(_parse_static(entry, port))
            else:
                raise TypeError(f"Static() takes str or Peer entries, not {type(entry).__name__}")
        self.peers: frozenset[Peer] = frozenset(peers)
        self.port = port

    def lookup(self) -> LookupResult:
        return LookupResult.good(self.peers)

    def __repr__(self) -> str:
        return f"Static({sorted(p.name for p in self.peers)!r})"


# --------------------------------------------------------------------------------------
# DNS
# --------------------------------------------------------------------------------------


class _LookupFailed(Exception):
    """Internal: one DNS query failed; ``str()`` is the LookupResult error."""


def _describe(err: object) -> str:
    """One dnspython per-server error (an rcode text or an exception) in a few words."""
    if isinstance(err, str):  # an rcode the server answered with: "SERVFAIL", "REFUSED", ...
        return err
    if isinstance(err, dns.message.Truncated):
        return "truncated answer"
    if isinstance(err, dns.exception.Timeout):
        return "timeout"
    if isinstance(err, dns.exception.FormError):
        return f"malformed answer ({type(err).__name__}: {err})"
    if isinstance(err, EOFError):
        return "network error (connection closed before a full answer)"
    if isinstance(err, OSError):
        return f"network error ({err})"
    return f"malformed answer ({type(err).__name__}: {err})"


def _no_nameservers_text(exc: dns.resolver.NoNameservers) -> str:
    errors: list[Any] = list(exc.kwargs.get("errors") or [])
    parts = []
    for entry in errors:
        # dnspython 2.x: (nameserver, tcp_attempt, port, error, response)
        server, tcp, _port, err = entry[0], entry[1], entry[2], entry[3]
        parts.append(f"{_describe(err)} from {server} over {'tcp' if tcp else 'udp'}")
    return "; ".join(parts) if parts else "no nameserver answered"


class _DnsBase:
    """Resolver settings shared by DnsA and DnsSrv."""

    service: str
    qname: dns.name.Name
    nameserver: str | None
    nameserver_port: int
    timeout: float

    def _init_dns(
        self, service: str, nameserver: str | None, nameserver_port: int, timeout: float
    ) -> None:
        if not service:
            raise ValueError("service must be a DNS name")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        try:
            self.qname = dns.name.from_text(service, origin=dns.name.root)
        except dns.exception.DNSException as exc:
            raise ValueError(f"service {service!r} is not a valid DNS name: {exc}") from exc
        self.service = service
        self.nameserver = nameserver
        self.nameserver_port = nameserver_port
        self.timeout = timeout

    def _resolver(self) -> dns.resolver.Resolver:
        if self.nameserver is None:
            try:
                resolver = dns.resolver.Resolver(configure=True)  # /etc/resolv.conf
            except (dns.exception.DNSException, OSError) as exc:
                raise _LookupFailed(f"no usable resolver configuration ({exc})") from exc
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self.nameserver]
            resolver.port = self.nameserver_port
        resolver.cache = None
        resolver.timeout = self.timeout
        resolver.lifetime = self.timeout
        return resolver

    def _query(
        self,
        resolver: dns.resolver.Resolver,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        deadline: float,
    ) -> dns.resolver.Answer | None:
        """One query; ``None`` for NXDOMAIN / no records; raises _LookupFailed otherwise."""
        remaining = deadline - time.monotonic()
        what = f"{dns.rdatatype.to_text(rdtype)} {name.to_text(omit_final_dot=True)}"
        if remaining <= 0:
            raise _LookupFailed(f"{what}: timeout ({self.timeout}s lifetime used up)")
        try:
            # An absolute name: no search-list expansion, whatever resolv.conf says.
            return resolver.resolve(name, rdtype, search=False, lifetime=remaining)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.resolver.NoNameservers as exc:
            raise _LookupFailed(f"{what}: {_no_nameservers_text(exc)}") from exc
        except dns.exception.Timeout as exc:  # LifetimeTimeout is a subclass
            raise _LookupFailed(f"{what}: timeout after {self.timeout}s ({exc})") from exc
        except dns.resolver.YXDOMAIN as exc:
            raise _LookupFailed(f"{what}: YXDOMAIN") from exc
        except OSError as exc:
            raise _LookupFailed(f"{what}: network error ({exc})") from exc
        except dns.exception.FormError as exc:
            raise _LookupFailed(f"{what}: malformed answer ({exc})") from exc
        except dns.exception.DNSException as exc:
            raise _LookupFailed(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _nameserver_text(self) -> str:
        if self.nameserver is None:
            return "system resolver"
        return f"{self.nameserver}#{self.nameserver_port}"


class DnsA(_DnsBase):
    """A records of a headless service: one peer ``f"{app}@{ip}"`` at ``(ip, port)`` per
    address. ``nameserver=None`` uses the system resolver configuration. ``service`` is
    taken as an absolute name (no search list)."""

    def __init__(
        self,
        service: str,
        app: str,
        port: int,
        nameserver: str | None = None,
        nameserver_port: int = 53,
        timeout: float = 2.0,
    ) -> None:
        if not app:
            raise ValueError("app must be a non-empty node basename")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, not {port!r}")
        self._init_dns(service, nameserver, nameserver_port, timeout)
        self.app = app
        self.port = port

    def lookup(self) -> LookupResult:
        deadline = time.monotonic() + self.timeout
        try:
            resolver = self._resolver()
            answer = self._query(resolver, self.qname, dns.rdatatype.A, deadline)
            if answer is None:
                return LookupResult.good(())
            return LookupResult.good(
                Peer(name=f"{self.app}@{rd.address}", host=rd.address, port=self.port)
                for rd in answer
            )
        except _LookupFailed as exc:
            return LookupResult.failed(str(exc))
        except Exception as exc:  # never let one odd answer kill the poller
            return LookupResult.failed(f"A {self.service}: {type(exc).__name__}: {exc}")

    def __repr__(self) -> str:
        return (
            f"DnsA({self.service!r}, app={self.app!r}, port={self.port}, "
            f"via {self._nameserver_text()})"
        )


class DnsSrv(_DnsBase):
    """SRV records (a StatefulSet's headless service): one peer
    ``f"{app}@{target}"`` (target without the final dot) at the SRV port, whose host is the
    target's A record, taken from the answer's additional section when the server put it
    there, else resolved. A target without an address (NXDOMAIN / no A record) is left out;
    a failed address lookup fails the whole lookup (a partial set would prune). Of several
    SRV records for one target, the lowest (priority, port) is used; of several addresses,
    the lowest. A target of ``"."`` ("no service") is ignored."""

    def __init__(
        self,
        service: str,
        app: str,
        nameserver: str | None = None,
        nameserver_port: int = 53,
        timeout: float = 2.0,
    ) -> None:
        if not app:
            raise ValueError("app must be a non-empty node basename")
        self._init_dns(service, nameserver, nameserver_port, timeout)
        self.app = app

    def lookup(self) -> LookupResult:
        deadline = time.monotonic() + self.timeout
        try:
            return self._lookup(deadline)
        except _LookupFailed as exc:
            return LookupResult.failed(str(exc))
        except Exception as exc:  # never let one odd answer kill the poller
            return LookupResult.failed(f"SRV {self.service}: {type(exc).__name__}: {exc}")

    def _lookup(self, deadline: float) -> LookupResult:
        resolver = self._resolver()
        answer = self._query(resolver, self.qname, dns.rdatatype.SRV, deadline)
        if answer is None:
            return LookupResult.good(())
        # target -> (priority, port), lowest wins
        targets: dict[dns.name.Name, tuple[int, int]] = {}
        for rd in answer:
            if rd.target == dns.name.root:
                continue
            key = (int(rd.priority), int(rd.port))
            if rd.target not in targets or key < targets[rd.target]:
                targets[rd.target] = key
        glue: dict[dns.name.Name, list[str]] = {}
        for rrset in answer.response.additional:
            if rrset.rdtype == dns.rdatatype.A and rrset.rdclass == dns.rdataclass.IN:
                glue.setdefault(rrset.name, []).extend(rd.address for rd in rrset)
        peers = []
        for target, (_prio, port) in targets.items():
            addresses = glue.get(target)
            if not addresses:
                a = self._query(resolver, target, dns.rdatatype.A, deadline)
                addresses = [rd.address for rd in a] if a is not None else []
            if not addresses:
                continue
            host = min(addresses, key=_address_key)
            peers.append(
                Peer(
                    name=f"{self.app}@{target.to_text(omit_final_dot=True)}",
                    host=host,
                    port=port,
                )
            )
        return LookupResult.good(peers)

    def __repr__(self) -> str:
        return f"DnsSrv({self.service!r}, app={self.app!r}, via {self._nameserver_text()})"


def _address_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))
