"""The join: ppp interface → L2TP session → tunnel peer → IKE SA → user.

Pure functions over snapshots, so recorded answers exercise exactly what production does.
It lives with the sessions collector, its one user, because it needs the sources' types
(kernel, and strongSwan or Libreswan); no source imports another for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.kernel.gcpause import gc_paused
from exporter.kernel.model import (
    L2tpIpsecSession,
    L2tpSnapshot,
    L2tpTunnel,
    PppHookRecord,
    PppInterface,
)
from exporter.libreswan.ledger import user_of
from exporter.libreswan.model import IpsecSa, PlutoSnapshot
from exporter.strongswan.snapshot import IkeSA, StrongswanSnapshot

#: The IKE daemon's state the join reads: charon's or pluto's.
IkeSnapshot = StrongswanSnapshot | PlutoSnapshot


def live_hooks(
    hooks: Mapping[str, PppHookRecord], interfaces: Iterable[PppInterface]
) -> dict[str, PppHookRecord]:
    """The hook records that belong to the live interface of their name.

    A record with another interface index is left over from an earlier session (pppd
    killed without ip-down) on a reused name.
    """
    index = {i.name: i.index for i in interfaces}
    return {
        name: rec
        for name, rec in hooks.items()
        if name in index and (rec.ifindex is None or rec.ifindex == index[name])
    }


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def tunnel_of(
    interface: str, l2tp: L2tpSnapshot | None, hook: PppHookRecord | None
) -> L2tpTunnel | None:
    """The L2TP tunnel carrying `interface`: from the kernel's session, else the hook's ids."""
    return _Tunnels(l2tp).of(interface, hook)


def ike_sa_for(public_address: str, strongswan: StrongswanSnapshot | None) -> IkeSA | None:
    """The one established IKE SA with that remote host; None when none or ambiguous.

    Several clients behind one NAT address share a remote host; the join then prefers
    the SAs with a transport-mode CHILD SA and, when still more than one, gives up
    rather than name the wrong user.
    """
    if strongswan is None or not public_address:
        return None
    return _one_sa([sa for sa in strongswan.ike_sas if sa.remote_host == public_address])


def _one_sa(at_address: Iterable[IkeSA]) -> IkeSA | None:
    """`ike_sa_for`'s choice among the IKE SAs of one remote host."""
    candidates = [sa for sa in at_address if sa.state == "ESTABLISHED"]
    if len(candidates) > 1:
        candidates = [
            sa
            for sa in candidates
            if any(c.mode == "TRANSPORT" and c.state == "INSTALLED" for c in sa.children)
        ]
    return candidates[0] if len(candidates) == 1 else None


@dataclass(frozen=True, slots=True)
class IkeMatch:
    """What the IKE daemon knows of the client at one public address."""

    conn: str
    user: str
    uniqueid: str
    established_at: float | None


def ike_match(public_address: str, ike: IkeSnapshot | None) -> IkeMatch | None:
    """The one IKE peer at that public address, from either daemon; None when none or
    ambiguous (several clients behind one NAT address and nothing to tell them apart)."""
    if isinstance(ike, PlutoSnapshot):
        return pluto_match(public_address, ike)
    sa = ike_sa_for(public_address, ike)
    if sa is None:
        return None
    return IkeMatch(sa.conn, sa.user, sa.uniqueid, sa.established_at)


def pluto_match(public_address: str, pluto: PlutoSnapshot) -> IkeMatch | None:
    """pluto's connection instance with an IPsec SA to that address; None when none, or
    when instances of several users share the address. `uniqueid` is the IKE SA's serial
    (`#N`), else the IPsec SA's."""
    if not public_address:
        return None
    return _pluto_one([sa for sa in pluto.ipsec_sas if sa.peer == public_address])


def _pluto_one(sas: Sequence[IpsecSa]) -> IkeMatch | None:
    """`pluto_match`'s answer from the IPsec SAs to one peer address."""
    if not sas:
        return None
    tunnels = {(sa.connection, sa.instance, user_of(sa)) for sa in sas}
    if len(tunnels) > 1:
        return None
    newest = max(sas, key=lambda sa: sa.serial)
    first = min(sas, key=lambda sa: sa.serial)
    serial = newest.ike_serial if newest.ike_serial else newest.serial
    return IkeMatch(newest.connection, user_of(newest), str(serial), first.added_at)


class _IkePeers:
    """`ike_match` for many addresses: the daemon's SAs grouped by peer address once,
    so the join of N clients reads each SA once, not once per client."""

    def __init__(self, ike: IkeSnapshot | None) -> None:
        self._ike = ike
        self._charon: dict[str, list[IkeSA]] = {}
        self._pluto: dict[str, list[IpsecSa]] = {}
        if isinstance(ike, PlutoSnapshot):
            for ipsec in ike.ipsec_sas:
                self._pluto.setdefault(ipsec.peer, []).append(ipsec)
        elif ike is not None:
            for sa in ike.ike_sas:
                self._charon.setdefault(sa.remote_host, []).append(sa)

    def match(self, public_address: str) -> IkeMatch | None:
        if not public_address or self._ike is None:
            return None
        if isinstance(self._ike, PlutoSnapshot):
            return _pluto_one(self._pluto.get(public_address, []))
        sa = _one_sa(self._charon.get(public_address, []))
        if sa is None:
            return None
        return IkeMatch(sa.conn, sa.user, sa.uniqueid, sa.established_at)


class _Tunnels:
    """`tunnel_of` for many interfaces: the tunnels by id and each interface's first
    session indexed once."""

    def __init__(self, l2tp: L2tpSnapshot | None) -> None:
        self._l2tp = l2tp
        self._by_id: dict[int, L2tpTunnel] = {}
        self._of_interface: dict[str, int] = {}
        if l2tp is not None:
            self._by_id = {t.tunnel_id: t for t in l2tp.tunnels}
            for s in l2tp.sessions:
                self._of_interface.setdefault(s.interface, s.tunnel_id)

    def of(self, interface: str, hook: PppHookRecord | None) -> L2tpTunnel | None:
        if self._l2tp is None:
            return None
        if interface in self._of_interface:
            return self._by_id.get(self._of_interface[interface])
        if hook is not None and hook.l2tp_tunnel_id is not None:
            return self._by_id.get(hook.l2tp_tunnel_id)
        return None


@gc_paused
def join_sessions(
    interfaces: Iterable[PppInterface],
    l2tp: L2tpSnapshot | None,
    hooks: Mapping[str, PppHookRecord],
    strongswan: IkeSnapshot | None,
) -> list[L2tpIpsecSession]:
    """One session per ppp interface, with what each layer knows about it."""
    interfaces = list(interfaces)
    hooks = live_hooks(hooks, interfaces)
    tunnels = _Tunnels(l2tp)
    peers = _IkePeers(strongswan)
    out = []
    for iface in interfaces:
        hook = hooks.get(iface.name)
        tunnel = tunnels.of(iface.name, hook)
        public = tunnel.peer_address if tunnel is not None else ""
        if not public and hook is not None and _is_address(hook.ipparam):
            # xl2tpd in user-space mode passes the L2TP peer's address as ipparam.
            public = hook.ipparam
        sa = peers.match(public)
        ppp_user = hook.peer_name if hook is not None else ""
        ike_user = sa.user if sa is not None else ""
        started = iface.up_since
        if started is None and hook is not None:
            started = hook.up_since
        if started is None and sa is not None:
            started = sa.established_at
        out.append(
            L2tpIpsecSession(
                interface=iface.name,
                user=ppp_user or ike_user,
                ppp_user=ppp_user,
                ike_user=ike_user,
                conn=sa.conn if sa is not None else "",
                public_address=public,
                inner_address=iface.peer_address or (hook.peer_address if hook else ""),
                ike_uniqueid=sa.uniqueid if sa is not None else "",
                started_at=started,
            )
        )
    return out
