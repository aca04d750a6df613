"""READDIR and READDIRPLUS (RFC 1813 sections 3.3.16 and 3.3.17).

Cookies are kernel directory positions (``d_off``, :mod:`floatlock.nfs.dirents`), verified by
:mod:`floatlock.nfs.cookies`.  The directory is opened for reading as the caller (read
permission), and READDIRPLUS looks each entry up as the caller (search permission); an entry
that vanished meanwhile, sits on another filesystem (a mount point) or is ``..`` is returned
without attributes and handle, which the client then looks up itself.

Sizes: ``count`` (READDIR) and ``maxcount`` (READDIRPLUS) bound the whole reply,
``dircount`` the fileid/name/cookie part only (section 3.3.17); both are clamped to the
transport's maximum.  A buffer too small for even one entry gives NFS3ERR_TOOSMALL.
"""

from __future__ import annotations

import os

from floatlock.nfs.context import Request, attr_of, post_attr, status_of
from floatlock.nfs.cookies import cookie_ok, cookie_verifier
from floatlock.nfs.dirents import read_entries
from floatlock.nfs.errors import NfsError
from floatlock.nfs.fhandle import name_to_handle
from floatlock.nfs.proto import Nfsstat3
from floatlock.nfs.proto_args import ReaddirArgs
from floatlock.nfs.proto_attr import Fattr3
from floatlock.nfs.proto_dirlist import DirEntry, ReaddirRes, entry_size
from floatlock.nfs.resolver import Obj

_REPLY_OVERHEAD = 4 + 4 + 84 + 8 + 4 + 4  # status, post_op_attr, verifier, list end, eof
_U64 = 1 << 64


def _plus_part(req: Request, d: Obj, name: str) -> tuple[Fattr3 | None, bytes | None]:
    if name == "..":
        return None, None
    root = d.root
    try:
        st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        if st.st_dev != root.dev:
            return None, None
        htype, kernel = name_to_handle(d.fd, name if name != "." else "")
    except OSError:
        return None, None
    fh = req.state.resolver.codec.encode(root.export.export_id, htype, kernel)
    return Fattr3.from_stat(st, root.export.export_id), fh


def readdir3(req: Request, a: ReaddirArgs) -> ReaddirRes:
    """Sections 3.3.16 (plus=False) and 3.3.17 (plus=True)."""
    plus = a.plus
    try:
        d = req.open(a.fh)
    except NfsError as e:
        return ReaddirRes(e.status, plus=plus)
    with d:
        if not d.is_dir:
            return ReaddirRes(Nfsstat3.NOTDIR, attr_of(d), plus=plus)
        if not cookie_ok(a.cookie, a.verf, d.st):
            return ReaddirRes(Nfsstat3.BAD_COOKIE, attr_of(d), plus=plus)
        verf = cookie_verifier(d.st)
        maxcount = min(a.maxcount, req.max_io)
        dircount = min(a.dircount, req.max_io) if plus else maxcount
        fh_len = len(d.fh)
        entries: list[DirEntry] = []
        used, dir_used, eof = _REPLY_OVERHEAD, 0, True
        start = a.cookie - _U64 if a.cookie >= 1 << 63 else a.cookie
        try:
            with req.acting():
                fd = os.open(d.proc_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    for ent in read_entries(fd, start):
                        dshare, total = entry_size(len(os.fsencode(ent.name)), plus, fh_len)
                        if used + total > maxcount or (plus and dir_used + dshare > dircount):
                            eof = False
                            break
                        used += total
                        dir_used += dshare
                        if plus:
                            attr, fh = _plus_part(req, d, ent.name)
                            entries.append(DirEntry(ent.ino, ent.name, ent.off % _U64, attr, fh))
                        else:
                            entries.append(DirEntry(ent.ino, ent.name, ent.off % _U64))
                finally:
                    os.close(fd)
        except OSError as e:
            st = status_of(e)
            if a.cookie and st == Nfsstat3.INVAL:
                st = Nfsstat3.BAD_COOKIE
            return ReaddirRes(st, post_attr(d), plus=plus)
        if not entries and not eof:
            return ReaddirRes(Nfsstat3.TOOSMALL, post_attr(d), plus=plus)
        return ReaddirRes(Nfsstat3.OK, post_attr(d), verf, tuple(entries), eof, plus)
