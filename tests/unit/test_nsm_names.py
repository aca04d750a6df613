"""Reversible, safe file names for mon_name / my_name."""

from __future__ import annotations

import pytest

from floatlock.nsm import names

HOSTILE = [
    "../../etc/passwd",
    "..",
    ".",
    ".hidden",
    "a/b",
    "nul\0byte",
    "new\nline",
    "sp ace",
    "tab\t",
    "\x7f",
    "%41",
    "%",
    "ünï",
    "bad\udcffutf8",
    "",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_one_safe_component(name: str) -> None:
    enc = names.encode(name)
    assert enc and enc not in (".", "..")
    assert not enc.startswith(".")
    assert "/" not in enc and "\0" not in enc
    assert all(33 <= ord(c) < 127 for c in enc)
    assert names.decode(enc) == name


@pytest.mark.parametrize("name", ["client1.example.com", "198.18.0.7", "fe80::1", "my-host_2"])
def test_ordinary_names_are_written_as_nfs_utils_writes_them(name: str) -> None:
    assert names.encode(name) == name
    assert names.decode(name) == name


@pytest.mark.parametrize("text", ["a/b", ".x", "%4", "%zz", "%41", "a b", "", "..", "é"])
def test_decode_refuses_what_encode_never_produces(text: str) -> None:
    with pytest.raises(names.NameError_):
        names.decode(text)
