"""What the VM interop tests look at on the server side: the daemon's log, the kernel's locks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


def wait_for_log(path: Path, text: str, what: str, timeout: float = 30) -> None:
    """Poll the log at ``path`` until it contains ``text``; fail with its tail otherwise."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}:\n{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def ofd_locks_on(path: Path) -> list[str]:
    """The /proc/locks lines of OFD locks on ``path``: how NLM locks show in the kernel."""
    ino = os.stat(path).st_ino
    return [
        line
        for line in Path("/proc/locks").read_text().splitlines()
        if "OFDLCK" in line and f":{ino} " in line
    ]
