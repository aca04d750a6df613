"""The benchmark tools: rpcload (C load generator) and echo (C responder), on 127.0.0.1 only.

Every run here is bounded by a call count, so no assertion depends on timing.
"""

from __future__ import annotations

import shutil
import socket
import struct
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.loadgen import (
    EchoServer,
    LoadResult,
    Proto,
    build,
    echo_server,
    encode_sequences,
    format_table,
    null_call,
    run_load,
)

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

MiB = 1 << 20
HOST = "127.0.0.1"
NLM_PROG, NLM_VERS = 100021, 4
PROC_UNAVAIL = 3


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    build()
    with echo_server(HOST, 0, 0) as server:
        yield server


def port_of(server: EchoServer, proto: Proto) -> int:
    return server.udp_port if proto == "udp" else server.tcp_port


def check_complete(result: LoadResult, calls: int) -> None:
    assert result.calls == calls
    assert result.errors == 0
    assert result.timeouts == 0
    assert result.seconds > 0
    assert result.calls_per_s > 0
    assert 0 < result.p50_us <= result.p90_us <= result.p99_us <= result.p999_us
    assert result.p999_us <= result.max_us


def test_build_makes_both_tools() -> None:
    out = build()
    for tool in ("rpcload", "echo"):
        assert (out / tool).is_file()
        assert (out / tool).stat().st_mode & 0o111


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("inflight", [1, 8])
def test_null_calls_against_echo_are_all_answered(
    echo: EchoServer, proto: Proto, inflight: int
) -> None:
    result = run_load(HOST, port_of(echo, proto), proto, inflight, calls=2000, warmup_calls=100)
    check_complete(result, 2000)
    assert result.sequences == 2000  # one-message sequences
    assert result.inflight == inflight


def test_auth_sys_and_time_bounded_run(echo: EchoServer) -> None:
    result = run_load(HOST, echo.udp_port, "udp", 4, seconds=0.05, warmup=0.0, auth_sys=True)
    assert result.calls > 0
    assert result.errors == 0


def test_more_slots_than_calls_still_counts_exactly(echo: EchoServer) -> None:
    check_complete(run_load(HOST, echo.tcp_port, "tcp", 32, calls=5), 5)


def test_sequences_over_tcp_with_echo(echo: EchoServer) -> None:
    seqs = [[null_call(0, NLM_PROG, NLM_VERS, proc) for proc in (2, 4)] for _ in range(3)]
    result = run_load(HOST, echo.tcp_port, "tcp", 6, sequences=seqs, calls=600)
    check_complete(result, 600)
    # calls-mode stops issuing measured calls mid-sequence for at most one call per slot
    assert 300 - 6 <= result.sequences <= 300


def test_calls_larger_than_a_datagram_go_over_tcp_only(echo: EchoServer) -> None:
    # A 1 MiB NFS WRITE is one record over TCP (bench.nfs_io's WRITE rows); over UDP such a
    # call cannot be sent, and the sequence file is refused before rpcload starts.
    big = null_call(0, NLM_PROG, NLM_VERS, 0) + bytes(MiB)
    check_complete(run_load(HOST, echo.tcp_port, "tcp", 4, sequences=[[big]] * 4, calls=40), 40)
    with pytest.raises(ValueError, match="bytes"):
        run_load(HOST, echo.udp_port, "udp", 1, sequences=[[big]], calls=1)


class ScriptedUdpServer:
    """A Python UDP responder that records (slot, proc) of each call and can misbehave."""

    def __init__(self, reply: Callable[[int, int, bool], bytes | None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.reply = reply
        self.calls: dict[int, list[int]] = defaultdict(list)
        self.seen: set[int] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            xid, mtype, _rpcvers, _prog, _vers, proc = struct.unpack_from(">6I", data)
            if mtype != 0:
                continue
            first_time = xid not in self.seen
            self.seen.add(xid)
            if first_time:
                self.calls[xid & 1023].append(proc)
            out = self.reply(xid, proc, first_time)
            if out is not None:
                self.sock.sendto(out, peer)

    def __enter__(self) -> ScriptedUdpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()
        self.sock.close()


def accepted(xid: int, accept_stat: int = 0) -> bytes:
    return struct.pack(">6I", xid, 1, 0, 0, 0, accept_stat)


def test_each_slot_walks_its_own_sequence_and_errors_are_counted() -> None:
    # 2 sequences of 3 calls; proc 9 is answered PROC_UNAVAIL, which must count as an error
    seqs = [
        [null_call(0, NLM_PROG, NLM_VERS, p) for p in procs] for procs in ([1, 2, 9], [5, 6, 7])
    ]

    def reply(xid: int, proc: int, first: bool) -> bytes:
        return accepted(xid, PROC_UNAVAIL if proc == 9 else 0)

    with ScriptedUdpServer(reply) as server:
        result = run_load(HOST, server.port, "udp", 4, sequences=seqs, calls=240)
    assert result.calls == 240
    assert result.timeouts == 0
    assert 0 < result.errors <= 240 // 3 + 4
    assert set(server.calls) == {0, 1, 2, 3}
    for slot, procs in server.calls.items():
        expected = [1, 2, 9] if slot % 2 == 0 else [5, 6, 7]
        assert procs == [expected[i % 3] for i in range(len(procs))]
        assert procs[-1] == expected[-1]  # every slot finished its last sequence


def test_unanswered_udp_call_is_retransmitted_and_counted() -> None:
    dropped: list[int] = []

    def reply(xid: int, proc: int, first: bool) -> bytes | None:
        if first and not dropped:
            dropped.append(xid)
            return None
        return accepted(xid)

    with ScriptedUdpServer(reply) as server:
        result = run_load(HOST, server.port, "udp", 2, calls=50, timeout_ms=50)
    assert len(dropped) == 1
    assert result.calls == 50
    assert result.timeouts >= 1
    assert result.errors == 0


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def test_echo_tcp_handles_fragments_pipelining_and_ignores_replies(echo: EchoServer) -> None:
    call1 = null_call(0x01020304, NLM_PROG, NLM_VERS, 0, body=b"x" * 10)
    call2 = null_call(0x0A0B0C0D, NLM_PROG, NLM_VERS, 0)
    not_a_call = accepted(0x55555555)
    # call1 as three fragments, the first only 2 bytes long (xid split across fragments)
    frags = [call1[:2], call1[2:20], call1[20:]]
    stream = b"".join(
        struct.pack(">I", len(f) | (0x80000000 if i == len(frags) - 1 else 0)) + f
        for i, f in enumerate(frags)
    )
    stream += struct.pack(">I", 0x80000000 | len(not_a_call)) + not_a_call
    stream += struct.pack(">I", 0x80000000 | len(call2)) + call2
    with socket.create_connection((HOST, echo.tcp_port), timeout=5) as sock:
        for i in range(len(stream)):  # one byte at a time: headers split too
            sock.sendall(stream[i : i + 1])
        replies = recv_exact(sock, 2 * 28)
    mark = struct.pack(">I", 0x80000000 | 24)
    assert replies == mark + accepted(0x01020304) + mark + accepted(0x0A0B0C0D)


def test_echo_udp_reply_is_minimal_accepted_success(echo: EchoServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(null_call(0xDEADBEEF, 100003, 3, 0), (HOST, echo.udp_port))
        data, _ = sock.recvfrom(1024)
    assert data == accepted(0xDEADBEEF)


def test_format_table_aligns_columns() -> None:
    r = LoadResult(10, 1.0, 10.0, 10, 10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0, 0, 0, 1)
    lines = format_table([("a", r), ("longer label", r)]).splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1
    assert lines[3].startswith("longer label")


def test_encode_sequences_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_sequences([])
    with pytest.raises(ValueError):
        encode_sequences([[b"short"]])
    assert encode_sequences([[b"12345678"]]) == struct.pack(">III", 1, 1, 8) + b"12345678"
