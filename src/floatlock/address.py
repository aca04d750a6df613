"""The server address a request arrived on: the seed's one identifier for a virtual server.

A floating IP moves between nodes; everything that must move with it (NLM hosts, grace clocks,
NSM monitor records, locks) is keyed by the local address the client talked to.  The transports
learn it for every request (IP_PKTINFO on UDP, the connection's local address on TCP) and hand
it up as a :data:`ServerAddress`: the canonical text form of the IP address, as
:mod:`ipaddress` prints it.  Text, because it is what statd receives as ``my_name`` (the seed:
"the my_name field ... is set to a textual representation of that destination address") and
what names the per-address state directory.

IPv4-mapped IPv6 addresses (``::ffff:198.18.0.1``) are folded to their IPv4 form so that one
virtual server has one name whichever socket family saw it.
"""

from __future__ import annotations

import ipaddress
from typing import NewType

ServerAddress = NewType("ServerAddress", str)

__all__ = ["ServerAddress", "canonical_ip", "is_loopback", "server_address"]


def canonical_ip(text: str) -> str:
    """Canonical text of an IP address; raises ValueError for anything that is not one."""
    # Strip an IPv6 zone ("fe80::1%eth0"): the zone is not part of the address's identity.
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def server_address(text: str) -> ServerAddress:
    return ServerAddress(canonical_ip(text))


def is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(canonical_ip(text)).is_loopback
    except ValueError:
        return False
