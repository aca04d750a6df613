"""Another copy of a floatlock module, loaded from a file, for A/B figures in one run.

``git show REV:src/floatlock/net/tcp.py > /tmp/tcp_old.py`` then ``load("/tmp/tcp_old.py")``
gives that revision's module beside the current one (its own imports still resolve to the
current package).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

__all__ = ["connection_class", "load"]


def load(path: str) -> ModuleType:
    """The module in file ``path``, under a private name (registered: dataclasses need it)."""
    name = f"_baseline_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def connection_class(tcp: ModuleType) -> Any:
    """The TCP server's per-connection protocol class in ``tcp`` (a ``net/tcp.py``, current
    or a baseline): ``TcpConnection``, re-exported there since it moved to ``net/tcpconn.py``,
    or ``_Connection`` in revisions before that."""
    cls = getattr(tcp, "TcpConnection", None) or getattr(tcp, "_Connection", None)
    if cls is None:
        raise AttributeError(f"{tcp.__name__} has no TCP connection class")
    return cls
