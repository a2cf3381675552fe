"""The comparison: every flow the output allows that nothing intends, every intended flow
it blocks (also when the other side masks it for now), kube-dns reachability, and half-open
intents across domains."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..diagnostics import Diagnostic, Location, error, warning
from .connectivity import (
    DIRECTIONS,
    Connectivity,
    Direction,
    Grant,
    Origin,
    Stance,
    Verdict,
    sparse_pairs,
)
from .endpoints import Endpoint, is_dns, is_dns_flow
from .gateways import NO_HOPS, GatewayHops
from .ports import DNS_PORTS, PortSet


def _origins(grants: Iterable[Grant], ports: PortSet) -> list[Origin]:
    out: list[Origin] = []
    for grant in grants:
        if grant.ports & ports and grant.origin not in out:
            out.append(grant.origin)
    return out


def _list(origins: Sequence[Origin], limit: int = 3) -> str:
    shown = "; ".join(str(o) for o in origins[:limit])
    more = len(origins) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Mismatch:
    source: Endpoint
    destination: Endpoint
    ports: PortSet
    kind: Literal["unintended", "blocked"]
    diagnostic: Diagnostic


def compare(actual: Connectivity, intended: Connectivity,
            hops: GatewayHops = NO_HOPS) -> list[Mismatch]:
    """Every flow the output allows but nothing intends, and every intended flow it blocks.

    By classes of peers (:func:`.connectivity.sparse_pairs`): a flow on which both models say
    their defaults, equal ones, is as intended and not looked at; where a subject's defaults
    differ, every flow of its unnamed class is looked at, one by one, and reported.

    Flows between Istio networks are compared hop by hop (:mod:`.gateways`): the pod-to-pod
    pair is no flow Cilium sees."""
    out: list[Mismatch] = []
    endpoints = actual.endpoints

    def defaults_differ(direction: Direction, subject: int) -> bool:
        return actual.default(direction, subject) != intended.default(direction, subject)

    # A flow is looked at only from a side on which the models may differ: where both of its
    # sides agree for every peer (kube-dns aside: its flows are not compared), it is as
    # intended, and most subjects of a fleet rendered from its requirements agree. (Sound
    # because is_dns_flow skips every flow with a kube-dns end: one predicate for both.)
    dns = frozenset(i for i, e in enumerate(endpoints) if is_dns(e))

    def may_differ(direction: Direction, subject: int) -> bool:
        return subject not in dns and not _agree(actual.stance(direction, subject),
                                                 intended.stance(direction, subject), dns)

    for i, j in sparse_pairs((actual, intended), defaults_differ, may_differ):
        src, dst = endpoints[i], endpoints[j]
        if is_dns_flow(src, dst) or hops.routed(src, dst):
            continue
        if actual.verdict_ports("egress", i, j) == intended.verdict_ports("egress", i, j) and \
                actual.verdict_ports("ingress", j, i) == intended.verdict_ports("ingress", j, i):
            continue  # both sides as intended: the flow is too
        a_e, a_i = actual.verdict("egress", i, j), actual.verdict("ingress", j, i)
        n_e, n_i = intended.verdict("egress", i, j), intended.verdict("ingress", j, i)
        allowed = a_e.ports & a_i.ports
        wanted = n_e.ports & n_i.ports
        extra = allowed - wanted
        if extra:
            out.append(_unintended(src, dst, extra, a_e, a_i, n_e, n_i, intended, i, j))
        missing = wanted - allowed
        if missing:
            out.append(_blocked(src, dst, missing, a_e, a_i, n_e, n_i, actual, i, j))
        if not extra and not missing:
            out += _latent(src, dst, (a_e, n_e, "egress", intended.egress[i].default_deny),
                           (a_i, n_i, "ingress", intended.ingress[j].default_deny))
    return out


def _agree(a: Stance, b: Stance, dns: frozenset[int]) -> bool:
    """Whether two stances give every peer but the ``dns`` pods the same
    :meth:`~.connectivity.Connectivity.verdict_ports` (True only when they do; False may be a
    pair that agrees after all).

    A pod's verdict is read from the compiled maps (restriction, per-pod and wildcard allows
    and denies); an address's from the grants that name addresses or every peer, whose
    blocks, ports and wildcard-ness alone count (unions and differences of their ports)."""
    if a.restricted != b.restricted:
        return False
    a_allow, a_any, a_deny, a_deny_any = a.compiled()
    b_allow, b_any, b_deny, b_deny_any = b.compiled()
    if a_any != b_any or a_deny_any != b_deny_any:
        return False
    for x, y in ((a_allow, b_allow), (a_deny, b_deny)):
        if x != y and any(peer not in dns for peer, _ in x.items() ^ y.items()):
            return False
    if not (a.addresses() or b.addresses()):
        return True  # neither has a grant _address_grants keeps
    return _address_grants(a) == _address_grants(b)


def _address_grants(stance: Stance) -> tuple[frozenset[tuple[Any, ...]], ...]:
    """What decides a stance's verdicts on address endpoints (:func:`_agree`)."""
    return tuple(frozenset((g.blocks, g.ports, g.wildcard) for g in grants
                           if g.blocks or g.wildcard)
                 for grants in (stance.allows, stance.denies))


def _latent(src: Endpoint, dst: Endpoint,
            *sides: tuple[Verdict, Verdict, str, list[Origin]]) -> list[Mismatch]:
    """One side differs from its intent while the other side blocks the flow anyway.

    The flow is right today, by accident: once the other side changes (say, the other domain
    admits it), the rendered output would be wrong. Reported so that every rendered rule is
    checked, not only the rules of flows that can happen.
    """
    out: list[Mismatch] = []
    masked = ("masked for now: the other side blocks this flow too, so it shows once that "
              "side changes")
    for actual, intended, direction, restrictors in sides:
        if actual.ports == intended.ports:
            continue
        subject, peer = (src, dst) if direction == "egress" else (dst, src)
        preposition = "to" if direction == "egress" else "from"
        missing = intended.ports - actual.ports
        if missing:
            intended_by = _origins(intended.grants, missing)
            where = intended_by[0].location if intended_by else Location("(requirements)")
            message = (f"expected the {direction} of {subject.title} to allow {preposition} "
                       f"{peer.title} on {missing} (intended by {_list(intended_by)}), found "
                       f"it not allowed by the rendered policies ({masked})")
            out.append(Mismatch(src, dst, missing, "blocked", error(where, "", message)))
        extra = actual.ports - intended.ports
        if extra:
            found = _allowed_side(actual, f"the {direction} of {subject.title}", extra)
            blame = (f"{restrictors[0].what} restricts it" if restrictors
                     else "no requirement restricts it")
            message = (f"expected the {direction} of {subject.title} not to allow "
                       f"{preposition} {peer.title} on {extra} (no requirement allows it; "
                       f"{blame}), found: {found} ({masked})")
            location = restrictors[0].location if restrictors else (
                _origins(actual.grants, extra) or [Origin(Location("(rendered)"), "")])[0].location
            out.append(Mismatch(src, dst, extra, "unintended", error(location, "", message)))
    return out


def _allowed_side(verdict: Verdict, what: str, ports: PortSet) -> str:
    if not verdict.restricted:
        return f"{what} is unrestricted (no rendered policy enforces it)"
    return f"{what} is allowed by {_list(_origins(verdict.grants, ports))}"


def _unintended(src: Endpoint, dst: Endpoint, extra: PortSet, a_e: Verdict, a_i: Verdict,
                n_e: Verdict, n_i: Verdict, intended: Connectivity, i: int,
                j: int) -> Mismatch:
    blame: list[Origin] = []
    sides = []
    if not n_e.ports.covers(extra):
        blame += intended.egress[i].default_deny
        sides.append(f"the egress of {src.title}")
    if not n_i.ports.covers(extra):
        blame += intended.ingress[j].default_deny
        sides.append(f"the ingress of {dst.title}")
    first = blame[0] if blame else Origin(Location("(requirements)"), "no requirement")
    others = f" (also {_list(blame[1:])})" if len(blame) > 1 else ""
    found = "; ".join((_allowed_side(a_e, f"egress from {src.title}", extra),
                       _allowed_side(a_i, f"ingress to {dst.title}", extra)))
    message = (f"expected {src.title} -> {dst.title} to be blocked on {extra}: no requirement "
               f"allows it, and {first.what}{others} restricts {' and '.join(sides)}; found it "
               f"allowed: {found}")
    return Mismatch(src, dst, extra, "unintended", error(first.location, "", message))


def _blocked(src: Endpoint, dst: Endpoint, missing: PortSet, a_e: Verdict, a_i: Verdict,
             n_e: Verdict, n_i: Verdict, actual: Connectivity, i: int, j: int) -> Mismatch:
    intended_by = _origins((*n_e.grants, *n_i.grants), missing)
    blockers = []
    if not a_e.ports.covers(missing):
        blockers.append(f"the egress of {src.title} "
                        f"({_list(actual.egress[i].default_deny) or 'no policy'})")
    if not a_i.ports.covers(missing):
        blockers.append(f"the ingress of {dst.title} "
                        f"({_list(actual.ingress[j].default_deny) or 'no policy'})")
    if intended_by:
        first = intended_by[0]
        why = f"intended by {_list(intended_by)}"
        location = first.location
    else:
        why = "no requirement restricts it"
        restrictors = [*actual.egress[i].default_deny, *actual.ingress[j].default_deny]
        location = restrictors[0].location if restrictors else Location("(no policy)")
    message = (f"expected {src.title} -> {dst.title} to be allowed on {missing} ({why}), "
               f"found it blocked at {' and '.join(blockers)}")
    return Mismatch(src, dst, missing, "blocked", error(location, "", message))


def dns_problems(actual: Connectivity) -> list[Diagnostic]:
    """Every egress-restricted pod must reach kube-dns of its own cluster on UDP and TCP 53."""
    dns = {(e.domain, e.cluster): i for i, e in enumerate(actual.endpoints) if is_dns(e)}
    out = []
    for i, e in enumerate(actual.endpoints):
        if e.kind not in ("service", "client") or not actual.egress[i].restricted:
            continue
        j = dns.get((e.domain, e.cluster))
        if j is None:
            continue
        missing = DNS_PORTS - actual.flow(i, j)
        if missing:
            origin = actual.egress[i].default_deny[0]
            out.append(error(origin.location, "", f"expected {e.title} to reach kube-dns of its "
                             f"cluster on UDP/53 and TCP/53 (it is egress-restricted by "
                             f"{_list(actual.egress[i].default_deny)}), found {missing} "
                             "blocked: names will not resolve"))
    return out


def _cross_domain_pairs(model: Connectivity, everyone: Callable[[Direction, int], bool]
                        ) -> list[tuple[int, int]]:
    """Of :func:`.connectivity.sparse_pairs` ``((model,), everyone)``, in its order, the flows
    between pods (kube-dns aside) of different domains whose sides are both restricted, found
    from the restricted sides only: what :func:`half_open` looks at (it skips every other).

    A subject's named peers that are pods are those its allows and denies select
    (:meth:`.connectivity.Connectivity.named`: the others are address endpoints)."""
    endpoints = model.endpoints
    domain = [e.domain for e in endpoints]
    workload = [e.is_pod and e.kind != "dns" for e in endpoints]
    # per direction, the workloads restricted in it: a restricted egress (ingress) side
    # makes a pair only with a peer whose ingress (egress) is restricted
    restricted = [[workload[p] and model.stance(direction, p).restricted
                   for p in range(len(endpoints))] for direction in DIRECTIONS]
    every: dict[tuple[int, str], list[int]] = {}  # such peers of other domains, by side
    found: set[tuple[int, int]] = set()
    for subject in range(len(endpoints)):
        if not workload[subject]:
            continue
        here = domain[subject]
        for side, direction in enumerate(DIRECTIONS):
            if not restricted[side][subject]:
                continue
            ok = restricted[1 - side]
            others: list[int] | None
            if everyone(direction, subject):
                others = every.get((side, here))
                if others is None:
                    others = every[(side, here)] = [
                        p for p in range(len(endpoints)) if ok[p] and domain[p] != here]
            else:
                allow, _, deny, _ = model.stance(direction, subject).compiled()
                others = [p for p in allow if ok[p] and domain[p] != here]
                others += [p for p in deny if p not in allow and ok[p] and domain[p] != here]
            if side == 0:
                found.update((subject, p) for p in others)
            else:
                found.update((p, subject) for p in others)
    return sorted(found)


def half_open(intended: Connectivity) -> list[Diagnostic]:
    """Cross-domain intents that one side allows and the other side's requirements do not."""
    groups: dict[tuple[str, str, str, str, str], list[str]] = {}
    where: dict[tuple[str, str, str, str, str], Location] = {}
    endpoints = intended.endpoints

    def grants_unnamed(direction: Direction, subject: int) -> bool:
        stance = intended.stance(direction, subject)
        return stance.restricted and bool(stance.default())

    for i, j in _cross_domain_pairs(intended, grants_unnamed):
        src, dst = endpoints[i], endpoints[j]
        if not (src.is_pod and dst.is_pod) or is_dns_flow(src, dst) or src.domain == dst.domain:
            continue
        egress, ingress = intended.egress[i], intended.ingress[j]
        if not (egress.restricted and ingress.restricted):
            continue
        e_ports = intended.verdict_ports("egress", i, j)
        i_ports = intended.verdict_ports("ingress", j, i)
        for granted, other, asking, refusing in (
            (e_ports, i_ports, "egress", "ingress"), (i_ports, e_ports, "ingress", "egress"),
        ):
            lost = granted - other
            if not granted or not lost:
                continue
            # the allows of the granting side that match the peer (Connectivity.verdict's)
            stance, peer = (egress, j) if asking == "egress" else (ingress, i)
            grants = _origins((g for g in stance.allows if g.selects(peer)), lost)
            refusers = (ingress if refusing == "ingress" else egress).default_deny
            if not grants or not refusers:
                continue
            a, r = grants[0], refusers[0]
            key = (src.service_level, dst.service_level,
                   f"{a.location.file}:{a.location.line}",
                   f"{r.location.file}:{r.location.line}", f"{asking}:{lost}")
            where[key] = a.location
            groups.setdefault(key, []).append(
                f"{src.cluster}->{dst.cluster}")
    out = []
    for key, pairs in sorted(groups.items()):
        source, destination, allow_at, refuse_at, what = key
        asking, ports = what.split(":", 1)
        if asking == "egress":
            text = (f"half-open intent: {allow_at} lets {source} call {destination} on {ports} "
                    f"at egress, but the ingress of {destination} is restricted by {refuse_at} "
                    "and does not admit it")
        else:
            text = (f"half-open intent: {allow_at} admits {source} at the ingress of "
                    f"{destination} on {ports}, but the egress of {source} is restricted by "
                    f"{refuse_at} and does not allow it")
        out.append(warning(where[key], "", f"{text}: the traffic will silently fail "
                           f"(clusters {', '.join(sorted(set(pairs)))})"))
    return out
