"""floatlock's lockd against a C client built by ``rpcgen`` from the system's nlm_prot.x.

The classic protocol definition (package rpcsvc-proto, NLM v1 and v3: XNFS NLM chapters
"NLM_PROG" and "NLM_VERSX") is compiled into client stubs in a temporary directory, and
``tests/interop/rpcgen/nlm_client.c`` (libtirpc, package libtirpc-dev) drives NULL, TEST, LOCK,
UNLOCK, CANCEL, SHARE, UNSHARE, NM_LOCK and FREE_ALL against a lockd started in this process on
127.0.0.1, over UDP and over TCP with an explicit port (no portmapper).  A second run against an
address in grace checks DENIED_GRACE_PERIOD.  Outside CI a missing rpcgen, compiler or
libtirpc-dev skips; with ``CI=true`` it fails (see conftest).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import pytest

from tests.integration.test_nlm_wire import ClientNlm, Lockd, run
from tests.interop.conftest import _missing, require_tool

HERE = Path(__file__).resolve().parent / "rpcgen"
NLM_X = Path("/usr/include/rpcsvc/nlm_prot.x")
TIRPC = Path("/usr/include/tirpc")
GRANTED, DENIED, BLOCKED, GRACE = 0, 1, 3, 4
CLIENT_ADDR = "127.0.0.1"


@pytest.fixture(scope="module")
def nlm_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rpcgen = require_tool("rpcgen")
    cc = require_tool("cc")
    if not NLM_X.exists():
        _missing(f"{NLM_X} is missing (package rpcsvc-proto)")
    if not (TIRPC / "rpc" / "rpc.h").exists():
        _missing(f"{TIRPC} is missing (package libtirpc-dev)")
    out = tmp_path_factory.mktemp("rpcgen")
    shutil.copy(NLM_X, out / "nlm_prot.x")
    for flag, name in (("-h", "nlm_prot.h"), ("-l", "nlm_prot_clnt.c"), ("-c", "nlm_prot_xdr.c")):
        subprocess.run([rpcgen, flag, "-o", name, "nlm_prot.x"], cwd=out, check=True)
    binary = out / "nlm_client"
    subprocess.run(
        [
            cc,
            "-O1",
            f"-I{TIRPC}",
            f"-I{out}",
            "-o",
            str(binary),
            str(HERE / "nlm_client.c"),
            str(out / "nlm_prot_clnt.c"),
            str(out / "nlm_prot_xdr.c"),
            "-ltirpc",
        ],
        check=True,
        capture_output=True,
    )
    return binary


async def _client(
    binary: Path, host: str, port: int, proto: str, fh: bytes, script: str
) -> dict[str, list[int]]:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        host,
        str(port),
        proto,
        fh.hex(),
        "cclient",
        script,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    print(out.decode())
    lines: dict[str, list[int]] = {}
    for line in out.decode().splitlines():
        name, *rest = line.split()
        assert rest != ["FAIL"], line
        lines[name] = [int(v) for v in rest if v != "ok"]
    return lines


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_rpcgen_client_against_lockd(
    nlm_client: Path, tmp_path: Path, proto: Literal["udp", "tcp"]
) -> None:
    (tmp_path / "f").write_bytes(b"x" * 200)

    async def main() -> None:
        c = ClientNlm(CLIENT_ADDR)  # the C client's host (nothing is called back here)
        await c.start()
        lockd = Lockd(tmp_path, [c])
        await lockd.start()
        fh = lockd.fh("f")
        try:
            r = await _client(nlm_client, "127.0.0.1", lockd.port, proto, fh, "full")
            assert "NULL" in r and "NULL3" in r
            assert r["TEST_FREE"] == [GRANTED]
            assert r["LOCK1"] == [GRANTED]
            # Denied, naming the holder: svid 1, offset 0, length 10, exclusive.
            assert r["TEST_HELD"] == [DENIED, 1, 0, 10, 1]
            assert r["LOCK2"] == [DENIED]
            assert r["LOCK2_BLOCK"] == [BLOCKED]
            assert r["CANCEL2"] == [GRANTED]
            assert r["UNLOCK1"] == [GRANTED]
            assert r["LOCK2_AGAIN"] == [GRANTED]  # the cancelled request was not granted
            assert r["UNLOCK2"] == [GRANTED]
            assert r["SHARE1"] == [GRANTED]
            assert r["SHARE2"] == [DENIED]  # write access against deny-write
            assert r["UNSHARE1"] == [GRANTED]
            assert r["SHARE2_AGAIN"] == [GRANTED]
            assert r["UNSHARE2"] == [GRANTED]
            assert r["NM_LOCK3"] == [GRANTED]
            assert r["TEST_NM"] == [DENIED, 3, 100, 10, 1]
            assert r["TEST_AFTER_FREE_ALL"] == [GRANTED]  # FREE_ALL dropped the NM lock
            assert lockd.service.locks.held() == [] and lockd.service.locks.shares() == []
            # The same client against an address in grace.
            lockd.start_grace("127.0.0.12")
            g = await _client(nlm_client, "127.0.0.12", lockd.port, proto, fh, "grace")
            assert g == {"TEST": [GRACE], "LOCK": [GRACE]}
        finally:
            await lockd.close()
            c.close()

    run(main)
