"""The connectivity model both sides are built into: per endpoint and direction, whether it
is default-deny and which peers and ports it allows or denies; flows are evaluated from it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from ..diagnostics import Location
from ..load.document import Spot
from .addresses import Block
from .endpoints import Endpoint, EndpointIndex
from .ports import ALL_PORTS, NO_PORTS, PortSet

Direction = Literal["egress", "ingress"]
DIRECTIONS: tuple[Direction, Direction] = ("egress", "ingress")


class Origin:
    """Where an allow or a restriction comes from: a rendered rule or a requirement line.

    A rendered rule's place is a :class:`Spot`, looked up only when a report shows it (or
    origins are compared, which only reports do); equal origins have equal locations."""

    __slots__ = ("_where", "what")

    def __init__(self, where: Location | Spot, what: str) -> None:
        self._where = where
        self.what = what

    @property
    def location(self) -> Location:
        where = self._where
        if isinstance(where, Spot):
            where = self._where = where.location()
        return where

    def _key(self) -> tuple[Location, str]:
        return self.location, self.what

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Origin) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Origin({self._where!r}, {self.what!r})"

    def __str__(self) -> str:
        where = f"{self.location.file}:{self.location.line}" if self.location.line else \
            self.location.file
        return f"{self.what} ({where})"


@dataclass(frozen=True)
class Grant:
    """One rule's allow (or deny) for one direction: which peers, on which ports."""

    pods: frozenset[int]  # endpoint indices
    blocks: tuple[Block, ...]  # address ranges (CIDR endpoints)
    ports: PortSet
    origin: Origin
    wildcard: bool = False  # no L3 part: every peer, pods and addresses alike

    def selects(self, index: int) -> bool:
        return self.wildcard or index in self.pods

    def covers(self, version: int, lo: int, hi: int) -> bool:
        return self.wildcard or any(v == version and a <= lo and hi <= b
                                    for v, a, b in self.blocks)


@dataclass
class Stance:
    """One endpoint, one direction: whether it is default-deny, and its allows and denies."""

    default_deny: list[Origin] = field(default_factory=list)
    allows: list[Grant] = field(default_factory=list)
    denies: list[Grant] = field(default_factory=list)
    _compiled: tuple[dict[int, PortSet], PortSet, dict[int, PortSet], PortSet] | None = field(
        default=None, repr=False, compare=False)
    _default: PortSet | None = field(default=None, repr=False, compare=False)
    _addresses: bool = field(default=False, repr=False, compare=False)

    @property
    def restricted(self) -> bool:
        return bool(self.default_deny)

    def default(self) -> PortSet:
        """What it allows to (or from) every peer none of its rules names: its class of
        unnamed peers (wildcard rules aside, everything when unrestricted, else nothing).

        Computed once, like :meth:`compiled` (a stance is not changed after the build)."""
        if self._default is None:
            _, allow_any, _, deny_any = self.compiled()
            self._default = (allow_any if self.restricted else ALL_PORTS) - deny_any
        return self._default

    def compiled(self) -> tuple[dict[int, PortSet], PortSet, dict[int, PortSet], PortSet]:
        """Per peer pod: the union of allowed ports, of wildcard ports, of denied ports, ...

        Computed once, after the model is built (a stance is not changed after that).
        """
        if self._compiled is None:
            maps: list[tuple[dict[int, PortSet], PortSet]] = []
            addresses = False
            for grants in (self.allows, self.denies):
                per_pod: dict[int, PortSet] = {}
                everywhere = NO_PORTS
                for grant in grants:
                    ports = grant.ports
                    if grant.wildcard or grant.blocks:
                        addresses = True
                        if grant.wildcard:
                            everywhere |= ports
                    for index in grant.pods:
                        old = per_pod.get(index)
                        per_pod[index] = ports if old is None else old | ports
                maps.append((per_pod, everywhere))
            self._addresses = addresses
            self._compiled = (maps[0][0], maps[0][1], maps[1][0], maps[1][1])
        return self._compiled

    def addresses(self) -> bool:
        """Whether any of its grants names addresses or every peer (wildcard): what decides
        its verdicts on address endpoints besides restriction."""
        self.compiled()
        return self._addresses


@dataclass(frozen=True)
class Verdict:
    ports: PortSet
    restricted: bool
    grants: tuple[Grant, ...]  # the allows that matched the peer


class Connectivity:
    """Stances of every endpoint; evaluates flows between any two endpoints."""

    def __init__(self, endpoints: Sequence[Endpoint], index: EndpointIndex | None = None,
                 stances: tuple[list[Stance], list[Stance]] | None = None) -> None:
        """``index``: the :class:`EndpointIndex` of these very endpoints, when one is already
        built (several readings over the same endpoints share it). ``stances``: the egress and
        ingress stances, one per endpoint, when they are already made (default: unrestricted
        ones, to fill)."""
        self.endpoints = tuple(endpoints)
        if index is not None:
            self.__dict__["index"] = index.of(self.endpoints)  # the cached_property's value
        if stances is None:
            self.egress = [Stance() for _ in self.endpoints]
            self.ingress = [Stance() for _ in self.endpoints]
        else:
            self.egress, self.ingress = stances
            if not len(self.egress) == len(self.ingress) == len(self.endpoints):
                raise ValueError("one egress and one ingress stance per endpoint")
        self._block_peers: dict[int, tuple[int, ...]] = {}
        self._grants_kept: list[Grant] = []

    @cached_property
    def index(self) -> EndpointIndex:
        return EndpointIndex(self.endpoints)

    def stance(self, direction: Direction, index: int) -> Stance:
        return (self.egress if direction == "egress" else self.ingress)[index]

    def default(self, direction: Direction, subject: int) -> PortSet:
        """The verdict of ``subject`` on every peer outside :meth:`named`."""
        return self.stance(direction, subject).default()

    def named(self, direction: Direction, subject: int) -> frozenset[int]:
        """The peers whose verdict may differ from :meth:`default`: the pods its allows and
        denies select, and the address endpoints their CIDRs overlap.

        Every other peer is in one class, the stance's unnamed peers, and gets exactly
        :meth:`default` from :meth:`verdict` (a pod no grant selects gets the wildcard ports,
        an address no CIDR overlaps only the wildcard grants' too).
        """
        stance = self.stance(direction, subject)
        allow, _, deny, _ = stance.compiled()
        found = set(allow) | set(deny)
        for grant in (*stance.allows, *stance.denies):
            if grant.blocks:
                found.update(self._overlapping(grant))
        return frozenset(found)

    def _overlapping(self, grant: Grant) -> tuple[int, ...]:
        """The address endpoints a grant's CIDRs overlap (cached per grant object: a rule's
        grant is shared by every subject of the rule)."""
        found = self._block_peers.get(id(grant))
        if found is None:
            found = tuple(i for i in self.index.cidrs for v, lo, hi in (self.endpoints[i].block,)
                          if any(gv == v and a <= hi and b >= lo for gv, a, b in grant.blocks))
            self._block_peers[id(grant)] = found
            self._grants_kept.append(grant)  # keeps id(grant) unique while cached
        return found

    def verdict(self, direction: Direction, subject: int, peer: int, *,
                grants: bool = True) -> Verdict:
        """What ``subject`` allows to (egress) or from (ingress) ``peer``.

        ``grants=False`` leaves out which rules matched (faster; for the bulk of pairs).
        """
        stance = self.stance(direction, subject)
        endpoint = self.endpoints[peer]
        if endpoint.kind == "cidr":
            return self._block_verdict(stance, endpoint.block)
        allow, allow_any, deny, deny_any = stance.compiled()
        allowed = ALL_PORTS
        if stance.restricted:
            allowed = allow.get(peer, NO_PORTS) | allow_any
        denied = deny.get(peer, NO_PORTS) | deny_any
        if denied:
            allowed -= denied
        matched = tuple(g for g in stance.allows if g.selects(peer)) if grants else ()
        return Verdict(allowed, stance.restricted, matched)

    def verdict_ports(self, direction: Direction, subject: int, peer: int) -> PortSet:
        """``verdict(...).ports`` without building a :class:`Verdict` (the bulk of pairs)."""
        stance = (self.egress if direction == "egress" else self.ingress)[subject]
        endpoint = self.endpoints[peer]
        if endpoint.kind == "cidr":
            return self._block_verdict(stance, endpoint.block).ports
        allow, allow_any, deny, deny_any = stance.compiled()
        allowed = (allow.get(peer, NO_PORTS) | allow_any) if stance.restricted else ALL_PORTS
        denied = deny.get(peer, NO_PORTS) | deny_any
        return allowed - denied if denied else allowed

    def _block_verdict(self, stance: Stance, block: Block) -> Verdict:
        version, lo, hi = block
        relevant = [g for g in (*stance.allows, *stance.denies)
                    if g.wildcard or any(v == version and a <= hi and b >= lo
                                         for v, a, b in g.blocks)]
        cuts = {lo, hi + 1}
        for grant in relevant:
            for v, a, b in grant.blocks:
                if v == version and a <= hi and b >= lo:
                    cuts.update((max(a, lo), min(b, hi) + 1))
        points = sorted(cuts)
        result: PortSet | None = None
        used: list[Grant] = []
        for start, end in itertools.pairwise(points):
            allowed = ALL_PORTS
            if stance.restricted:
                allowed = NO_PORTS
                for grant in stance.allows:
                    if grant in relevant and grant.covers(version, start, end - 1):
                        allowed |= grant.ports
                        if grant not in used:
                            used.append(grant)
            for deny in stance.denies:
                if deny in relevant and deny.covers(version, start, end - 1):
                    allowed -= deny.ports
            result = allowed if result is None else result & allowed
            if not result:
                break
        return Verdict(result or NO_PORTS, stance.restricted, tuple(used))

    def flow(self, source: int, destination: int) -> PortSet:
        return (self.verdict_ports("egress", source, destination)
                & self.verdict_ports("ingress", destination, source))

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Every (source, destination) that is a flow: pod to anything else, address to pod."""
        for i, src in enumerate(self.endpoints):
            for j, dst in enumerate(self.endpoints):
                if i != j and (src.is_pod or dst.is_pod):
                    yield i, j

    def flows(self) -> dict[tuple[int, int], PortSet]:
        """Every allowed flow (non-empty port set)."""
        return allowed(self.pairs(), self.flow)


def sparse_pairs(models: Sequence[Connectivity],
                 everyone: Callable[[Direction, int], bool],
                 subjects: Callable[[Direction, int], bool] | None = None
                 ) -> list[tuple[int, int]]:
    """The flows (as :meth:`Connectivity.pairs` yields them, in its order) on which the
    ``models`` may say anything but their defaults: a subject's named peers in any model, and
    every peer of a subject for which ``everyone(direction, subject)`` holds (its class of
    unnamed peers must be looked at one by one, say because the models' defaults differ).

    A flow outside them gets :meth:`Connectivity.default` on both sides in every model.
    ``subjects``: only the subjects (and directions) for which it holds are looked at (the
    flows of the others are left out unless another subject's side brings them in).
    """
    first = models[0]
    endpoints = first.endpoints
    pod = [e.is_pod for e in endpoints]
    every = range(len(endpoints))
    found: set[tuple[int, int]] = set()
    for subject in every:
        for direction in DIRECTIONS:
            if subjects is not None and not subjects(direction, subject):
                continue
            if everyone(direction, subject):
                peers: Iterable[int] = every
            else:
                named: set[int] = set()
                for model in models:
                    named |= model.named(direction, subject)
                peers = named
            if direction == "egress":
                found.update((subject, peer) for peer in peers)
            else:
                found.update((peer, subject) for peer in peers)
    return sorted((i, j) for i, j in found if i != j and (pod[i] or pod[j]))


def allowed(pairs: Iterable[tuple[int, int]],
            flow: Callable[[int, int], PortSet]) -> dict[tuple[int, int], PortSet]:
    """The pairs whose ``flow`` is not empty, with its ports."""
    out = {}
    for i, j in pairs:
        ports = flow(i, j)
        if ports:
            out[(i, j)] = ports
    return out
