"""A service on port 0 gets one port number for UDP and TCP even when the number the kernel
picks for UDP is already held for TCP by someone else (seen in CI as EADDRINUSE at start)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from floatlock import daemon as daemon_mod
from floatlock.config import parse_config
from floatlock.server import build_daemon


def test_port_zero_tries_another_port_when_tcp_holds_the_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]  # held for TCP; the same number is free for UDP
    real = daemon_mod.UdpServer
    steered: list[int] = []

    def udp_server(dispatcher: Any, host: str, port: int, **kw: Any) -> Any:
        if port == 0 and not steered:
            steered.append(taken)  # the first ephemeral pick lands on the taken number
            port = taken
        return real(dispatcher, host, port, **kw)

    monkeypatch.setattr(daemon_mod, "UdpServer", udp_server)
    (tmp_path / "export").mkdir()
    cfg = parse_config(
        f"""
[server]
listen = ["127.0.0.1"]
state_dir = "{tmp_path}/state"
log_level = "warning"
[ports]
nfs = 0
mount = 0
nlm = 0
statd = 0
[portmap]
mode = "off"
[[export]]
path = "{tmp_path}/export"
"""
    )

    async def main() -> list[tuple[str, int, int]]:
        daemon = build_daemon(cfg)
        await daemon.start()
        try:
            return [(li.service, li.udp.port, li.tcp.port) for li in daemon.listeners]
        finally:
            await daemon.stop()

    try:
        listeners = asyncio.run(main())
    finally:
        blocker.close()
    assert steered == [taken]
    assert len(listeners) == 4
    for _service, udp_port, tcp_port in listeners:
        assert udp_port == tcp_port != taken
