"""Address blocks of CIDRs (with their ``except`` holes) as disjoint integer ranges."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .ports import merge_spans, subtract_spans

Block = tuple[int, int, int]  # (IP version, first address, last address)


def block_of(cidr: str) -> Block:
    network = ipaddress.ip_network(cidr, strict=False)
    return (network.version, int(network.network_address), int(network.broadcast_address))


def cidr_blocks(cidr: str, excepts: Iterable[str] = ()) -> tuple[Block, ...]:
    """The addresses of ``cidr`` minus its ``except`` blocks, as disjoint ranges."""
    version, lo, hi = block_of(cidr)
    holes = []
    for text in excepts:
        v, a, b = block_of(text)
        if v == version:
            holes.append((a, b))
    return tuple((version, a, b) for a, b in subtract_spans([(lo, hi)], merge_spans(holes)))
