"""The ``floatlock`` command: serve, statd, and the NLM client commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from floatlock import __version__
from floatlock.config import ConfigError, load_config

log = logging.getLogger("floatlock")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from floatlock.daemon import StartupError, serve
    from floatlock.server import build_daemon

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"floatlock: {e}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or cfg.server.log_level)
    try:
        daemon = build_daemon(cfg)
    except StartupError as e:  # an export that cannot be served, a kernel too old, ...
        print(f"floatlock: {e}", file=sys.stderr)
        return 2
    return asyncio.run(serve(daemon))


def _cmd_statd(args: argparse.Namespace) -> int:
    from floatlock.nsm import statd

    return asyncio.run(statd.run(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floatlock",
        description="NFSv3 server whose NLM locks fail over with virtual server addresses",
    )
    parser.add_argument("--version", action="version", version=f"floatlock {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run NFS, MOUNT, NLM, NSM and the portmapper")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="override the config"
    )
    serve.set_defaults(func=_cmd_serve)

    from floatlock.nsm import statd

    statd_parser = sub.add_parser(
        "statd", help="run floatlock's statd alone (a drop-in for nfs-utils rpc.statd)"
    )
    statd.add_arguments(statd_parser)
    statd_parser.set_defaults(func=_cmd_statd)

    from floatlock.nlm.cli import add_subcommands as add_nlm_subcommands

    add_nlm_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
