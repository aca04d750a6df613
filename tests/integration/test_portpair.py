"""listen_pair: a service on port 0 gets one port number for UDP and TCP even when the number
the kernel picks for UDP is already held for TCP by someone else (seen in CI as EADDRINUSE at
start); a fixed port that TCP cannot have is an error, with nothing left listening."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

from floatlock.net import portpair
from floatlock.rpc.dispatch import Dispatcher


@pytest.fixture
def tcp_held() -> Any:
    """A port number held for TCP (a listener), free for UDP."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    yield blocker.getsockname()[1]
    blocker.close()


def test_port_zero_tries_another_port_when_tcp_holds_the_number(
    tcp_held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = portpair.UdpServer
    steered: list[int] = []

    def udp_server(dispatcher: Any, host: str, port: int, **kw: Any) -> Any:
        if port == 0 and not steered:
            steered.append(tcp_held)  # the first ephemeral pick lands on the taken number
            port = tcp_held
        return real(dispatcher, host, port, **kw)

    monkeypatch.setattr(portpair, "UdpServer", udp_server)

    async def main() -> tuple[int, int]:
        udp, tcp = await portpair.listen_pair(Dispatcher(), "127.0.0.1", 0, max_record=4096)
        try:
            assert tcp.max_record == 4096
            return udp.port, tcp.port
        finally:
            udp.close()
            await tcp.close()

    udp_port, tcp_port = asyncio.run(main())
    assert steered == [tcp_held]
    assert udp_port == tcp_port != tcp_held


def test_a_fixed_port_held_for_tcp_is_an_error(tcp_held: int) -> None:
    async def main() -> None:
        await portpair.listen_pair(Dispatcher(), "127.0.0.1", tcp_held)

    with pytest.raises(OSError) as ei:
        asyncio.run(main())
    assert ei.value.errno == errno.EADDRINUSE
    # The UDP side was closed again: the number can be bound for UDP now.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", tcp_held))
    probe.close()
