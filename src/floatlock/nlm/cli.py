"""``floatlock lock | unlock | test | share | unshare``: NLM requests from the command line.

Theory of operation
-------------------
Each command is one :class:`~floatlock.nlm.client.NlmClient` session against ``SERVER``.
The file is named by its NFS file handle in hex, or by ``--path EXPORT_PATH:FILE`` (resolved
with MOUNT MNT + NFSv3 LOOKUP, :mod:`floatlock.nlm.fhpath`).  One result line is printed,
with the status spelled as in XNFS (``NLM4_GRANTED``; ``nlm_granted`` for v1/v3).

``lock`` and ``share`` must then decide what happens to what they got: ``--hold SECONDS``
holds it and releases it, ``--keep`` leaves it held and prints the owner (``--caller``,
``--svid``, ``--oh``) with which a later ``unlock``/``unshare`` names it; by default it is
held until SIGINT/SIGTERM and then released.

Exit status: 0 granted; 1 any other NLM status (denied, blocked past ``--wait-timeout``,
grace period, ...); 2 usage, resolution or connection errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any, Final

from floatlock.net.client import RpcConnectionError, RpcTimeout
from floatlock.nlm.client import NlmClient, NlmError, status_name
from floatlock.nlm.fhpath import PathError, parse_target, resolve_path
from floatlock.nlm.proto import FshAccess, FshMode, Nlm4Stat
from floatlock.portmap.proto import PMAP_PORT
from floatlock.rpc.message import RpcError
from floatlock.xdr import XdrError

__all__ = ["COMMANDS", "add_subcommands", "main", "run"]

EXIT_GRANTED: Final = 0
EXIT_DENIED: Final = 1
EXIT_ERROR: Final = 2

COMMANDS: Final = ("lock", "unlock", "test", "share", "unshare")

_DENY = {"none": FshMode.DN, "read": FshMode.DR, "write": FshMode.DW, "both": FshMode.DRW}
_ACCESS = {"none": FshAccess.NONE, "read": FshAccess.R, "write": FshAccess.W, "both": FshAccess.RW}


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from None


def _common(p: argparse.ArgumentParser, *, ranged: bool) -> None:
    p.add_argument("server", help="NLM server (address or name)")
    p.add_argument("fh", nargs="?", type=_hex, help="NFS file handle in hex")
    p.add_argument("--path", metavar="EXPORT_PATH:FILE", help="name the file instead of FH")
    p.add_argument("--version", dest="nlm_version", type=int, choices=(1, 3, 4), default=4)
    t = p.add_mutually_exclusive_group()
    t.add_argument("--udp", dest="transport", action="store_const", const="udp")
    t.add_argument("--tcp", dest="transport", action="store_const", const="tcp")
    p.set_defaults(transport="udp")
    p.add_argument("--port", type=int, help="NLM port (default: ask the portmapper)")
    p.add_argument("--pmap-port", type=int, default=PMAP_PORT, help="server's portmapper port")
    p.add_argument("--svid", type=int, help="lock owner's svid (default: our pid)")
    p.add_argument("--oh", type=_hex, help="owner handle in hex (default: svid@caller)")
    p.add_argument("--caller", help="caller_name (default: this host's name)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC call")
    if ranged:
        p.add_argument("--offset", type=int, default=0)
        p.add_argument("--length", type=int, default=0, help="0: to the end of the file")


def _holding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reclaim", action="store_true", help="reclaim during the grace period")
    h = p.add_mutually_exclusive_group()
    h.add_argument("--hold", type=float, metavar="SECONDS", help="hold, then release")
    h.add_argument("--keep", action="store_true", help="leave it held and print the owner")


def _share_modes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deny", choices=tuple(_DENY), default="none", help="fsh_mode")
    p.add_argument("--access", choices=tuple(_ACCESS), default="both", help="fsh_access")


def add_subcommands(subparsers: Any) -> None:
    """Add lock, unlock, test, share and unshare to an ``add_subparsers()`` object."""
    lock = subparsers.add_parser("lock", help="take an NLM byte-range lock")
    _common(lock, ranged=True)
    lock.add_argument("--shared", action="store_true", help="a read (shared) lock")
    lock.add_argument("--wait", action="store_true", help="block until granted")
    lock.add_argument("--wait-timeout", type=float, metavar="SECONDS", help="then CANCEL")
    lock.add_argument(
        "--poll-interval", type=float, default=30.0, metavar="SECONDS", help="re-send blocked LOCK"
    )
    lock.add_argument("--state", type=int, default=0, help="our NSM state number")
    lock.add_argument(
        "--local-pmap-port", type=int, default=PMAP_PORT, help="portmapper for GRANTED"
    )
    _holding(lock)
    unlock = subparsers.add_parser("unlock", help="release an NLM lock")
    _common(unlock, ranged=True)
    test = subparsers.add_parser("test", help="ask whether a lock would be granted")
    _common(test, ranged=True)
    test.add_argument("--shared", action="store_true", help="test for a read lock")
    share = subparsers.add_parser("share", help="take a DOS share reservation (v3/v4)")
    _common(share, ranged=False)
    _share_modes(share)
    _holding(share)
    unshare = subparsers.add_parser("unshare", help="release a share reservation")
    _common(unshare, ranged=False)
    _share_modes(unshare)
    for name, p in zip(COMMANDS, (lock, unlock, test, share, unshare), strict=True):
        p.set_defaults(func=_sync, nlm_command=name)


def _sync(args: argparse.Namespace) -> int:
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    """Run one parsed NLM command; print its result line; return the exit status."""
    try:
        fh = await _file_handle(args)
        async with await NlmClient.connect(
            args.server,
            version=args.nlm_version,
            transport=args.transport,
            port=args.port,
            pmap_port=args.pmap_port,
            local_pmap_port=getattr(args, "local_pmap_port", PMAP_PORT),
            caller_name=args.caller,
            svid=args.svid,
            oh=args.oh,
            timeout=args.timeout,
            poll_interval=getattr(args, "poll_interval", 30.0),
        ) as client:
            return await _COMMANDS[args.nlm_command](client, fh, args)
    except (NlmError, PathError) as e:
        return _fail(str(e))
    except (RpcTimeout, RpcConnectionError, RpcError, XdrError, OSError) as e:
        return _fail(f"{args.server}: {e or type(e).__name__}")


def _fail(msg: str) -> int:
    print(f"floatlock: {msg}", file=sys.stderr)
    return EXIT_ERROR


async def _file_handle(args: argparse.Namespace) -> bytes:
    if (args.fh is None) == (args.path is None):
        raise NlmError("name the file by FILE_HANDLE_HEX or by --path EXPORT_PATH:FILE")
    if args.fh is not None:
        fh: bytes = args.fh
        return fh
    export, path = parse_target(args.path)
    return await resolve_path(
        args.server,
        export,
        path,
        transport=args.transport,
        pmap_port=args.pmap_port,
        timeout=args.timeout,
    )


def _owner(c: NlmClient) -> str:
    return f"caller={c.caller_name} svid={c.svid} oh={c.oh.hex()}"


def _extent(args: argparse.Namespace) -> str:
    end = "to end" if args.length == 0 else f"length {args.length}"
    return f"offset {args.offset} {end}"


def _exit(stat: int) -> int:
    return EXIT_GRANTED if stat == Nlm4Stat.GRANTED else EXIT_DENIED


async def _lock(c: NlmClient, fh: bytes, args: argparse.Namespace) -> int:
    kind = "shared" if args.shared else "exclusive"
    stat = await c.lock(
        fh,
        args.offset,
        args.length,
        not args.shared,
        block=args.wait,
        reclaim=args.reclaim,
        state=args.state,
        wait_timeout=args.wait_timeout,
        on_blocked=lambda: print(
            f"{status_name(Nlm4Stat.BLOCKED, c.vers)}: waiting for GRANTED",
            file=sys.stderr,
            flush=True,
        ),
    )
    what = f"{kind} lock on {fh.hex()} {_extent(args)}"
    if stat != Nlm4Stat.GRANTED:
        late = " (wait timed out, cancelled)" if stat == Nlm4Stat.BLOCKED and args.wait else ""
        print(f"{status_name(stat, c.vers)}: {what}{late}")
        return EXIT_DENIED
    if args.keep:
        again = _again(c, fh, args, "unlock", f" --offset {args.offset} --length {args.length}")
        print(f"{status_name(stat, c.vers)}: {what} kept by {_owner(c)}; release: {again}")
        return EXIT_GRANTED
    print(f"{status_name(stat, c.vers)}: {what} held by {_owner(c)}", flush=True)
    await _hold(args.hold)
    ustat = await c.unlock(fh, args.offset, args.length)
    print(f"{status_name(ustat, c.vers)}: unlocked {fh.hex()} {_extent(args)}")
    return _exit(ustat)


async def _unlock(c: NlmClient, fh: bytes, args: argparse.Namespace) -> int:
    stat = await c.unlock(fh, args.offset, args.length)
    print(f"{status_name(stat, c.vers)}: unlock {fh.hex()} {_extent(args)} by {_owner(c)}")
    return _exit(stat)


async def _test(c: NlmClient, fh: bytes, args: argparse.Namespace) -> int:
    kind = "shared" if args.shared else "exclusive"
    r = await c.test(fh, args.offset, args.length, not args.shared)
    name = status_name(r.stat, c.vers)
    what = f"{kind} lock on {fh.hex()} {_extent(args)}"
    if r.granted:
        print(f"{name}: {what} would be granted")
    elif r.holder is not None:
        h = r.holder
        hk = "exclusive" if h.exclusive else "shared"
        end = "to end" if h.length == 0 else f"length {h.length}"
        print(
            f"{name}: {what} conflicts with {hk} lock offset {h.offset} {end}"
            f" held by svid={h.svid} oh={h.oh.hex()}"
        )
    else:
        print(f"{name}: {what}")
    return _exit(r.stat)


def _modes(args: argparse.Namespace) -> tuple[FshMode, FshAccess, str]:
    mode, access = _DENY[args.deny], _ACCESS[args.access]
    return mode, access, f"access {args.access} deny {args.deny}"


async def _share(c: NlmClient, fh: bytes, args: argparse.Namespace) -> int:
    mode, access, text = _modes(args)
    stat = await c.share(fh, mode, access, args.reclaim)
    what = f"share {text} on {fh.hex()}"
    if stat != Nlm4Stat.GRANTED:
        print(f"{status_name(stat, c.vers)}: {what}")
        return EXIT_DENIED
    if args.keep:
        again = _again(c, fh, args, "unshare", f" --access {args.access} --deny {args.deny}")
        print(f"{status_name(stat, c.vers)}: {what} kept by {_owner(c)}; release: {again}")
        return EXIT_GRANTED
    print(f"{status_name(stat, c.vers)}: {what} held by {_owner(c)}", flush=True)
    await _hold(args.hold)
    ustat = await c.unshare(fh, mode, access)
    print(f"{status_name(ustat, c.vers)}: unshared {fh.hex()}")
    return _exit(ustat)


async def _unshare(c: NlmClient, fh: bytes, args: argparse.Namespace) -> int:
    mode, access, text = _modes(args)
    stat = await c.unshare(fh, mode, access)
    print(f"{status_name(stat, c.vers)}: unshare {text} on {fh.hex()} by {_owner(c)}")
    return _exit(stat)


def _again(c: NlmClient, fh: bytes, args: argparse.Namespace, cmd: str, extra: str) -> str:
    """The command line that releases what ``--keep`` left held (same owner, same file)."""
    via = "--tcp" if args.transport == "tcp" else "--udp"
    return (
        f"floatlock {cmd} {args.server} {fh.hex()} --version {c.vers} {via}"
        f" --caller {c.caller_name} --svid {c.svid} --oh {c.oh.hex()}{extra}"
    )


async def _hold(seconds: float | None) -> None:
    """Wait ``seconds`` (None: for ever); SIGINT or SIGTERM end the wait early."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


_COMMANDS: Final = {
    "lock": _lock,
    "unlock": _unlock,
    "test": _test,
    "share": _share,
    "unshare": _unshare,
}


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m floatlock.nlm.cli lock ...``)."""
    parser = argparse.ArgumentParser(prog="floatlock")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
