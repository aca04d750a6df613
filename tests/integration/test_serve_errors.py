"""``floatlock serve`` that cannot start says why in one line and exits 2: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_an_export_that_cannot_be_made_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    cfg = tmp_path / "floatlock.toml"
    cfg.write_text(
        f"""
# The export fails before anything is bound: no ports or portmapper to configure.
[server]
state_dir = "{tmp_path / "state"}"
[[export]]
path = "{tmp_path / "file" / "export"}"
clients = "127.0.0.1(rw)"
"""
    )
    proc = subprocess.run(
        [sys.executable, "-m", "floatlock", "serve", "--config", str(cfg)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("floatlock: cannot create")


def test_a_filesystem_encoding_that_would_change_names_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "floatlock.toml"
    cfg.write_text(
        f"""
[server]
state_dir = "{tmp_path / "state"}"
[[export]]
path = "{tmp_path / "export"}"
clients = "127.0.0.1(rw)"
"""
    )
    # The C locale, neither coerced to C.UTF-8 nor in UTF-8 mode: names would be ASCII.
    env = {**os.environ, "PYTHONPATH": SRC, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0"}
    proc = subprocess.run(
        [sys.executable, "-X", "utf8=0", "-m", "floatlock", "serve", "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "start Python in UTF-8 mode" in proc.stderr
