"""Safe, reversible file names (and record fields) for NSM ``mon_name`` / ``my_name``.

nfs-utils names a monitor record file after ``mon_name`` and writes ``mon_name`` and
``my_name`` as space-separated fields of the record line.  Both come from the network (XNFS:
``string mon_name<SM_MAXSTRLEN>``), so a hostile name could contain ``/``, ``..``, NUL,
spaces or newlines and escape the state directory or forge a record line.

:func:`encode` keeps every byte in ``[A-Za-z0-9._:-]`` as is and writes any other byte (and a
leading ``.``, so neither ``.``, ``..`` nor a hidden file can appear) as ``%XX``.  Host names
and IP addresses, which are all real peers send, are therefore written exactly as nfs-utils
writes them, so ``sm-notify`` reads our records; anything else is still a single safe path
component and a single whitespace-free field, and :func:`decode` gives the original back.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NameError_", "decode", "encode"]

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_HEX: Final = "0123456789ABCDEF"


class NameError_(ValueError):
    """An encoded name that is not one :func:`encode` could have produced."""


def encode(name: str) -> str:
    """A non-empty path component that never contains ``/``, NUL, whitespace or controls."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        return "%"  # the empty name; "%" alone is never produced otherwise
    out: list[str] = []
    for i, b in enumerate(raw):
        if b in _SAFE and not (i == 0 and b == 0x2E):
            out.append(chr(b))
        else:
            out.append("%" + _HEX[b >> 4] + _HEX[b & 15])
    return "".join(out)


def decode(text: str) -> str:
    """The name :func:`encode` turned into ``text``; :class:`NameError_` for anything else."""
    if text == "%":
        return ""
    raw = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%":
            h = text[i + 1 : i + 3]
            if len(h) != 2 or any(x not in _HEX for x in h):
                raise NameError_(f"bad escape in {text!r}")
            raw.append(int(h, 16))
            i += 3
        else:
            b = ord(c)
            if b > 127 or b not in _SAFE or (i == 0 and c == "."):
                raise NameError_(f"unsafe character {c!r} in {text!r}")
            raw.append(b)
            i += 1
    name = raw.decode("utf-8", "surrogateescape")
    # Only the canonical spelling is accepted, so two files can never hold the same name.
    if not raw or encode(name) != text:
        raise NameError_(f"non-canonical name {text!r}")
    return name
