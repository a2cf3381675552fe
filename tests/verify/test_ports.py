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


def test_ports_of_memo_keeps_each_reading() -> None:
    """ports_of is memoized: a second call gives the same set, and a bool port (equal to 1 as
    a dict key) is read on its own, not as the memoized port 1 (nor the other way round)."""
    assert type(ports_of("SCTP", True).spans[0][1]) is bool  # as unmemoized: True kept
    assert type(ports_of("SCTP", 1).spans[0][1]) is int
    assert type(ports_of("SCTP", True).spans[0][1]) is bool
    assert str(ports_of("SCTP", 1)) == "SCTP/1"
    assert ports_of("UDP", 53, 60) is ports_of("UDP", 53, 60)
    assert str(ports_of(None, 0)) == "any" and str(ports_of("ANY", 53, 54)) == \
        "TCP/53-54 UDP/53-54 SCTP/53-54"
