"""exports(5) parsing and client matching (sans-IO)."""

from __future__ import annotations

import pytest

from floatlock.nfs.creds import Squash
from floatlock.nfs.exports import (
    ClientKind,
    Export,
    ExportOptions,
    ExportsError,
    default_export_id,
    parse_exports,
)


def test_parse_lines_options_and_defaults() -> None:
    text = """
# comment
/srv/a   198.18.0.0/15(rw,no_root_squash,insecure) 127.0.0.1(ro) *(all_squash,anonuid=7)
/srv/b -rw,fsid=42 host.example(ro) \\
       *.example.org
"/srv/with space"   # everyone, read-only
"""
    a, b, c = parse_exports(text)
    assert a.path == "/srv/a" and a.export_id == default_export_id("/srv/a")
    net, one, anyone = a.clients
    assert net.kind is ClientKind.NETWORK
    assert net.options == ExportOptions(rw=True, squash=Squash.NONE, secure=False)
    assert one.kind is ClientKind.HOST and one.options == ExportOptions()
    assert anyone.kind is ClientKind.ANYONE
    assert anyone.options == ExportOptions(squash=Squash.ALL, anonuid=7)
    assert b.export_id == 42
    assert b.clients[0].options.rw is False  # per-client ro overrides the -rw default
    assert b.clients[1].kind is ClientKind.WILDCARD and b.clients[1].options.rw is True
    assert c.path == "/srv/with space" and c.clients[0].kind is ClientKind.ANYONE


@pytest.mark.parametrize(
    "line",
    [
        "/srv/x host(bogus)",
        "/srv/x host(anonuid=abc)",
        "/srv/x @netgroup(rw)",
        "relative host(rw)",
        "/srv/x host(rw",
        "/srv/x 10.0.0.0/99(rw)",
        "/srv/x *(fsid=0)",
    ],
)
def test_bad_lines_are_reported_with_line_number(line: str) -> None:
    with pytest.raises(ExportsError, match="line 2"):
        parse_exports("/srv/ok *(ro)\n" + line)


def test_duplicate_fsid_refused() -> None:
    with pytest.raises(ExportsError, match="already used"):
        parse_exports("/a *(fsid=5)\n/b *(fsid=5)")


def test_matching_precedence_host_then_wildcard_then_network_then_anyone() -> None:
    (e,) = parse_exports(
        "/e *(ro) 198.18.0.0/15(rw) *.lab(rw,no_root_squash) 198.18.0.9(rw,all_squash)"
    )

    def reverse(ip: str) -> list[str]:
        return {"198.18.0.5": ["n5.lab"], "198.18.0.9": ["n9.lab"]}.get(ip, [])

    def opts(ip: str) -> ExportOptions | None:
        return e.options_for(ip, lambda _n: (), reverse)

    nine, five, other, world = (
        opts("198.18.0.9"),
        opts("198.18.0.5"),
        opts("198.18.1.1"),
        opts("10.1.1.1"),
    )
    assert nine is not None and nine.squash is Squash.ALL
    assert five is not None and five.squash is Squash.NONE
    assert other is not None and other.rw and other.squash is Squash.ROOT
    assert world is not None and not world.rw
    # IPv4-mapped IPv6 addresses match their IPv4 form.
    mapped = opts("::ffff:198.18.0.9")
    assert mapped is not None and mapped.squash is Squash.ALL


def test_hostname_by_forward_lookup_and_no_match() -> None:
    (e,) = parse_exports("/e server.lab(rw)")
    fwd = {"server.lab": ["198.18.0.1"]}
    assert e.options_for("198.18.0.1", lambda n: fwd.get(n, []), lambda _a: []) is not None
    assert e.options_for("198.18.0.2", lambda n: fwd.get(n, []), lambda _a: []) is None


def test_path_normalised() -> None:
    assert Export("/srv//a/./b/../c/", ()).path == "/srv/a/c"
