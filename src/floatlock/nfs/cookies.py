"""READDIR cookie verifiers (RFC 1813 sections 3.3.16, 3.3.17), sans-IO.

Cookies are the kernel's directory positions (:mod:`floatlock.nfs.dirents`), which stay
meaningful while a directory changes; the *verifier* tells a client whether the listing it is
continuing is still the one it started.  It is derived from the directory's identity and
modification time, so it changes whenever an entry is added, removed or renamed.  A
continuation (cookie != 0) with a non-zero verifier that no longer matches is refused with
NFS3ERR_BAD_COOKIE; the client then starts over from cookie 0.  A zero verifier with a
non-zero cookie is accepted: RFC 1813 lets clients send zero when they have none (e.g. after
a server restart they reuse cookies they kept).
"""

from __future__ import annotations

import hashlib
import os

ZERO = b"\0" * 8


def cookie_verifier(st: os.stat_result) -> bytes:
    """Eight bytes that change whenever the directory's contents change (never all zero)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}".encode())
    v = h.digest()
    return v if v != ZERO else b"\0" * 7 + b"\1"


def cookie_ok(cookie: int, verf: bytes, st: os.stat_result) -> bool:
    """Whether a READDIR may continue from ``cookie`` given the client's verifier."""
    return cookie == 0 or verf == ZERO or verf == cookie_verifier(st)
