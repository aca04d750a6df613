"""Configuration: embedded defaults, TOML parsing, and one-line errors for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from floatlock.config import ConfigError, load_config, parse_config


def test_defaults_need_no_file() -> None:
    cfg = load_config(None)
    assert cfg.ports.nfs == 2049 and cfg.portmap.mode == "auto"
    assert cfg.server.virtual_server is True
    assert [e.path for e in cfg.exports] == [Path("var/export")]


def test_full_file(tmp_path: Path) -> None:
    f = tmp_path / "floatlock.toml"
    f.write_text(
        """
[server]
listen = ["198.18.0.1", "::1"]
state_dir = "/srv/state"
[ports]
nlm = 4045
[portmap]
mode = "builtin"
[[export]]
path = "/srv/a"
clients = "198.18.0.0/15(rw)"
[[export]]
path = "/srv/b"
[nlm]
grace_seconds = 15
[statd]
ha_callout = "/bin/true"
"""
    )
    cfg = load_config(f)
    assert cfg.server.listen == ("198.18.0.1", "::1")
    assert cfg.ports.nlm == 4045 and cfg.ports.nfs == 2049
    assert [str(e.path) for e in cfg.exports] == ["/srv/a", "/srv/b"]
    assert cfg.nlm.grace_seconds == 15.0 and cfg.statd.ha_callout == "/bin/true"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nlisten = ['nope']", "[server] listen: 'nope' is not an IP address"),
        ("[server]\nlisten = []", "needs at least one address"),
        ("[server]\nbogus = 1", "[server]: unknown key 'bogus'"),
        ("[sever]\n", "unknown table [sever]"),
        ("[ports]\nnfs = 70000", "[ports] nfs = 70000 is not a port number"),
        ("[ports]\nnfs = '2049'", "[ports].nfs: expected an integer"),
        ("[server]\nvirtual_server = 1", "expected true or false"),
        ("[portmap]\nmode = 'maybe'", "[portmap] mode must be one of"),
        ("[[export]]\nclients = '*'", "[[export]] #1"),
        ("export = 3", "export must be an array of tables"),
        ("[nlm]\ngrace_seconds = -1", "grace_seconds must not be negative"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "cfg.toml")
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("cfg.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_nfs_section() -> None:
    cfg = parse_config("[nfs]\nworkers = 2\ninline_metadata = false\n")
    assert cfg.nfs.workers == 2 and cfg.nfs.inline_metadata is False
    assert parse_config("").nfs.inline_metadata is True
    with pytest.raises(ConfigError, match=r"\[nfs\] workers"):
        parse_config("[nfs]\nworkers = 0\n")
    with pytest.raises(ConfigError, match="expected true or false"):
        parse_config('[nfs]\ninline_metadata = "yes"\n')
