"""The dispatcher's fast decoders (``lockargs_at``, ``unlockargs_at``) agree with the Decoder
ones on every input: the same value, or XdrError from both."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from floatlock.nlm.codec import NlmCodec, codec_for
from floatlock.nlm.proto import LockArgs, NlmLock, UnlockArgs
from floatlock.xdr import Decoder, XdrError


def _via_decoder(decode: Callable[[Decoder], object], data: bytes, pos: int) -> object:
    dec = Decoder(data, pos)
    value = decode(dec)
    dec.done()
    return value


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except XdrError:
        return XdrError


def _agree(codec: NlmCodec, data: bytes, pos: int) -> None:
    for slow, fast in (
        (codec.lockargs, codec.lockargs_at),
        (codec.unlockargs, codec.unlockargs_at),
    ):
        want = _outcome(lambda: _via_decoder(slow, data, pos))  # noqa: B023
        got = _outcome(lambda: fast(data, pos))  # noqa: B023
        assert got == want, (data.hex(), pos)


def _samples(codec: NlmCodec) -> list[bytes]:
    out = []
    for caller, fh, oh, cookie in (
        ("", b"", b"", b""),
        ("client.example", b"\x01" * 32, b"1234@client", b"\x00\x00\x00\x07"),
        ("h\xe9", b"\xff" * 63, b"o" * 5, b"c" * 9),
    ):
        lk = NlmLock(caller, fh, oh, 4242, 100, 7)
        out.append(codec.encode_lockargs(LockArgs(cookie, True, False, lk, True, 3)))
        out.append(codec.encode_unlockargs(UnlockArgs(cookie, lk)))
    return out


@pytest.mark.parametrize("vers", [1, 3, 4])
def test_fast_decoders_match(vers: int) -> None:
    codec = codec_for(vers)
    rng = random.Random(vers)
    prefix = b"\xaa" * 12
    for body in _samples(codec):
        data = prefix + body
        _agree(codec, data, len(prefix))
        for cut in range(len(prefix), len(data)):
            _agree(codec, data[:cut], len(prefix))
        _agree(codec, data + b"\0\0\0\0", len(prefix))
        for _ in range(300):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(prefix), len(data))
                mutated[i] = rng.choice((0, 1, 2, 0xFF, rng.randrange(256)))
            _agree(codec, bytes(mutated), len(prefix))


def test_fast_decoders_limits() -> None:
    codec = codec_for(4)
    data = codec.encode_unlockargs(UnlockArgs(b"", NlmLock("", b"", b"", 1, 0, 0)))
    assert codec.unlockargs_at(data, 0) == codec.unlockargs(Decoder(data))
    big = b"\x00\x00\x00\x00" + b"\x00\x00\x04\x01" + b"x" * 1028 + data[8:]
    with pytest.raises(XdrError):
        codec.unlockargs_at(big, 0)  # a caller_name of 1025 bytes


@pytest.mark.parametrize("vers", [1, 3, 4])
def test_res_reply_in_one_pack_matches_header_plus_res(vers: int) -> None:
    from floatlock.nlm.proto import Res
    from floatlock.rpc.message import success_header

    codec = codec_for(vers)
    for n in (0, 1, 2, 3, 4, 5, 8, 1024):
        for stat in range(9):
            res = Res(bytes(range(n % 256)) * (n // 256 + 1), stat)
            res = Res(res.cookie[:n], stat)
            assert codec.encode_res_reply(0xDEADBEEF, res) == success_header(
                0xDEADBEEF
            ) + codec.encode_res(res)
    with pytest.raises(XdrError):
        codec.encode_res_reply(1, Res(b"x" * 1025, 0))
