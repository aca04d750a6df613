"""READ buffers reused only when no reply refers to them; READ3resok in pieces."""

from __future__ import annotations

import threading

from floatlock.nfs.proto import Ftype3, Nfsstat3
from floatlock.nfs.proto_attr import Fattr3, NfsTime
from floatlock.nfs.proto_res_io import ReadRes
from floatlock.nfs.readbuf import ReadBuffers
from floatlock.xdr import Decoder

T = NfsTime(1, 2)
ATTR = Fattr3(Ftype3.REG, 0o644, 1, 0, 0, 5, 4096, (0, 0), 1, 2, T, T, T)


def test_a_buffer_is_reused_only_when_no_view_of_it_is_alive() -> None:
    bufs = ReadBuffers(per_thread=2)
    a = bufs.get(100)
    b = bufs.get(100)
    first, second = a.obj, b.obj
    assert first is not second and len(a) == 100
    tail = a[10:20]  # a reply's slice keeps the buffer busy
    a.release()
    c = bufs.get(100)
    assert c.obj is not tail.obj and c.obj is not b.obj
    tail.release()
    c.release()
    b.release()
    d = bufs.get(50)
    assert len(d) == 50 and d.obj in (first, second)  # a pooled buffer again


def test_pools_are_per_thread() -> None:
    bufs = ReadBuffers()
    mine = bufs.get(10)
    objs: list[object] = []
    mine.release()
    t = threading.Thread(target=lambda: objs.append(bufs.get(10).obj))
    t.start()
    t.join()
    again = bufs.get(10)
    assert objs[0] is not again.obj


def test_read_res_parts_join_to_the_encoding() -> None:
    for data in (b"", b"abc", b"abcd", memoryview(bytearray(b"xyzzy"))[:5]):
        res = ReadRes(Nfsstat3.OK, ATTR, True, data)
        parts = res.parts()
        assert any(p is data for p in parts)  # the data itself, not a copy
        joined = b"".join(parts)
        assert joined == res.encode()
        back = ReadRes.decode(Decoder(joined))
        assert back.data == bytes(data) and back.eof and back.attr == ATTR
    assert (
        ReadRes(Nfsstat3.IO, ATTR).encode()
        == ReadRes.decode(Decoder(ReadRes(Nfsstat3.IO, ATTR).encode())).encode()
    )
