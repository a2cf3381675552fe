"""Sets of (protocol, port) as merged ranges, and the integer range algebra they use.

Cilium's reading of a ``ports`` entry: no protocol or ``ANY`` means TCP, UDP and SCTP;
port 0 means every port. ICMP and L7 are outside the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..model import PortRule, Service

PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_PORT = 65535


Span = tuple[int, int]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def intersect_spans(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract_spans(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    for lo, hi in a:
        start = lo
        for blo, bhi in b:
            if bhi < start or blo > hi:
                continue
            if blo > start:
                out.append((start, blo - 1))
            start = max(start, bhi + 1)
            if start > hi:
                break
        if start <= hi:
            out.append((start, hi))
    return out


_ALL_SPANS = tuple((p, 1, MAX_PORT) for p in PROTOCOLS)


@dataclass(frozen=True)
class PortSet:
    """A set of (protocol, port) pairs over TCP, UDP and SCTP, kept as merged ranges."""

    spans: tuple[tuple[str, int, int], ...] = ()

    @staticmethod
    def of(items: Iterable[tuple[str, int, int]]) -> PortSet:
        by: dict[str, list[Span]] = {}
        for proto, lo, hi in items:
            by.setdefault(proto, []).append((lo, hi))
        return PortSet(tuple((p, lo, hi) for p in PROTOCOLS
                             for lo, hi in merge_spans(by.get(p, ()))))

    @staticmethod
    def single(protocol: str, port: int) -> PortSet:
        return PortSet.of([(protocol, port, port)])

    def _by(self) -> dict[str, list[Span]]:
        by: dict[str, list[Span]] = {p: [] for p in PROTOCOLS}
        for proto, lo, hi in self.spans:
            by[proto].append((lo, hi))
        return by

    def __or__(self, other: PortSet) -> PortSet:
        if not other.spans or self.spans == other.spans:
            return self
        if not self.spans:
            return other
        return PortSet.of((*self.spans, *other.spans))

    def __and__(self, other: PortSet) -> PortSet:
        if self.spans == other.spans or other.spans == _ALL_SPANS:
            return self
        if self.spans == _ALL_SPANS or not self.spans or not other.spans:
            return other if self.spans else self
        a, b = self._by(), other._by()
        return PortSet.of((p, lo, hi) for p in PROTOCOLS for lo, hi in intersect_spans(a[p], b[p]))

    def __sub__(self, other: PortSet) -> PortSet:
        if not other.spans or not self.spans:
            return self
        if self.spans == other.spans or other.spans == _ALL_SPANS:
            return PortSet()
        a, b = self._by(), other._by()
        return PortSet.of((p, lo, hi) for p in PROTOCOLS for lo, hi in subtract_spans(a[p], b[p]))

    def __bool__(self) -> bool:
        return bool(self.spans)

    def covers(self, other: PortSet) -> bool:
        return not (other - self)

    def __str__(self) -> str:
        if self == ALL_PORTS:
            return "any"
        if not self.spans:
            return "none"
        parts = []
        for proto, spans in self._by().items():
            if not spans:
                continue
            if spans == [(1, MAX_PORT)]:
                parts.append(f"{proto}/any")
                continue
            text = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans)
            parts.append(f"{proto}/{text}")
        return " ".join(parts)


ALL_PORTS = PortSet.of((p, 1, MAX_PORT) for p in PROTOCOLS)
NO_PORTS = PortSet()
DNS_PORTS = PortSet.of([("UDP", 53, 53), ("TCP", 53, 53)])


_PORTS_OF: dict[tuple[str | None, int | None, int | None], PortSet] = {}
_PORTS_OF_LIMIT = 4096


def ports_of(protocol: str | None, port: int | None, end_port: int | None = None) -> PortSet:
    """Cilium's reading of one ``ports`` entry: no protocol or ANY = TCP+UDP+SCTP; port 0 = all.

    Memoized (a PortSet is immutable): the same few service ports recur in every rule and
    Service that names them. Only plain ints are memoized (``True == 1`` as a dict key)."""
    if type(port) is int and (end_port is None or type(end_port) is int):
        key = (protocol, port, end_port)
        found = _PORTS_OF.get(key)
        if found is None:
            found = _ports_of(protocol, port, end_port)
            if len(_PORTS_OF) < _PORTS_OF_LIMIT:
                _PORTS_OF[key] = found
        return found
    return _ports_of(protocol, port, end_port)


def _ports_of(protocol: str | None, port: int | None, end_port: int | None) -> PortSet:
    protocols = PROTOCOLS if protocol in (None, "ANY") else (protocol,)
    if not port:
        return PortSet.of((p, 1, MAX_PORT) for p in protocols)
    hi = max(port, end_port or port)
    return PortSet.of((p, port, hi) for p in protocols)


def requirement_ports(rules: Iterable[PortRule]) -> PortSet:
    out = NO_PORTS
    for rule in rules:
        out |= ports_of(rule.protocol, int(rule.port))
    return out


def service_ports(service: Service) -> PortSet:
    return PortSet.of((p.protocol, p.port, p.port) for p in service.ports)
