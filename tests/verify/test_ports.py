"""meshplan.verify.ports: port sets as merged ranges."""

from __future__ import annotations

from meshplan.verify.ports import ALL_PORTS, PortSet, ports_of


def test_portset_algebra() -> None:
    a = PortSet.of([("TCP", 80, 90), ("UDP", 53, 53)])
    b = PortSet.of([("TCP", 85, 100)])
    assert str(a | b) == "TCP/80-100 UDP/53"
    assert str(a & b) == "TCP/85-90"
    assert str(a - b) == "TCP/80-84 UDP/53"
    assert str(ALL_PORTS) == "any" and not (ALL_PORTS - ports_of(None, 0))
    assert str(ports_of("ANY", 53)) == "TCP/53 UDP/53 SCTP/53"
    assert ALL_PORTS.covers(a) and not a.covers(b)
