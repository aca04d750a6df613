"""``floatlock serve`` that cannot start says why in one line and exits 2: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

SRC = str(Path(__file__).resolve().parents[2] / "src")


def refused(tmp_path: Path, export: Path, python: tuple[str, ...] = (), **env: str) -> str:
    """``floatlock serve`` of ``export`` (on loopback, ports chosen by the kernel, no
    portmapper) must exit 2 with one line: that line."""
    cfg = tmp_path / "floatlock.toml"
    cfg.write_text(
        f"""
ports = {{ nfs = 0, mount = 0, nlm = 0, statd = 0 }}
portmap = {{ mode = "off" }}
[server]
listen = ["127.0.0.1"]
state_dir = "{tmp_path / "state"}"
[[export]]
path = "{export}"
clients = "127.0.0.1(rw)"
"""
    )
    proc = subprocess.run(
        [sys.executable, *python, "-m", "floatlock", "serve", "--config", str(cfg)],
        env={**os.environ, "PYTHONPATH": SRC, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    return proc.stderr


def test_an_export_that_cannot_be_made_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    err = refused(tmp_path, tmp_path / "file" / "export")
    assert err.startswith("floatlock: cannot create")


def test_a_filesystem_encoding_that_would_change_names_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    # The C locale, neither coerced to C.UTF-8 nor in UTF-8 mode: names would be ASCII.
    err = refused(
        tmp_path, tmp_path / "export", ("-X", "utf8=0"), LC_ALL="C", PYTHONCOERCECLOCALE="0"
    )
    assert "start Python in UTF-8 mode" in err
