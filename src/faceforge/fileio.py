"""Careful file handling shared by every layer: limits from the environment (:func:`env_limit`), paths kept
inside their root (:func:`confine`, :func:`allow_outside_root`) and crash-safe writes
(:func:`atomic_write_bytes`, :func:`fsync_file`, :func:`fsync_dir`, :func:`public_file_mode`,
:func:`public_dir_mode`). Details: docs/security.md, "Implementation notes" (`faceforge.fileio`).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from faceforge.errors import FaceforgeError

__all__ = [
    "OutsideRootError",
    "allow_outside_root",
    "atomic_write_bytes",
    "check_inside",
    "confine",
    "dir_lock",
    "env_limit",
    "exchange_paths",
    "fsync_dir",
    "fsync_file",
    "outside_root_allowed",
    "public_dir_mode",
    "public_file_mode",
    "set_outside_root_allowed",
    "umask",
    "write_bytes",
    "write_text",
]


def env_limit(name: str, default: int, scale: int = 1) -> int:
    """``int(float($name) * scale)`` when the variable is set (must be positive), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default)
    try:
        v = int(float(raw) * scale)
    except ValueError:
        v = 0
    if v < 1:
        raise FaceforgeError(f"environment {name}={raw!r}: expected a positive number")
    return v


# --------------------------------------------------------------------------------------------------
# paths named by files stay inside their root

_OUTSIDE_OK: contextvars.ContextVar[bool] = contextvars.ContextVar("faceforge_outside_root_ok", default=False)


class OutsideRootError(FaceforgeError):
    """A path read from a file that resolves outside the root it must stay in."""


def outside_root_allowed() -> bool:
    """Whether the current context allows paths outside their root (``--allow-outside-root``)."""
    return _OUTSIDE_OK.get()


def set_outside_root_allowed(allowed: bool) -> None:
    """Set for the rest of the current context (a command-line verb) whether :func:`confine` lets paths
    outside their root through; :func:`allow_outside_root` is the scoped form."""
    _OUTSIDE_OK.set(bool(allowed))


@contextlib.contextmanager
def allow_outside_root(allowed: bool = True) -> Iterator[None]:
    """Within the block, :func:`confine` lets paths outside their root through (``--allow-outside-root``)."""
    token = _OUTSIDE_OK.set(bool(allowed))
    try:
        yield
    finally:
        _OUTSIDE_OK.reset(token)


def confine(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    where: str,
    allow_outside: bool | None = None,
) -> str:
    """``path`` (relative ones joined to ``root``), normalised; refused when it resolves outside ``root``.

    Symlinks are resolved on both sides, ``~`` is not expanded (a file's ``~/x`` is a relative name),
    and ``where`` (``file:line``) names the offending line in the error. ``allow_outside`` None follows
    :func:`outside_root_allowed`.
    """
    p = os.fspath(path)
    joined = os.path.normpath(os.path.join(os.fspath(root), p))
    check_inside(joined, root, where, allow_outside, shown=p)
    return joined


def check_inside(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    where: str,
    allow_outside: bool | None = None,
    shown: str | None = None,
) -> None:
    """Raise :class:`OutsideRootError` naming ``where`` when ``path`` (symlinks resolved) is not inside
    ``root`` (also resolved), unless allowed (see :func:`confine`)."""
    allowed = outside_root_allowed() if allow_outside is None else allow_outside
    if allowed:
        return
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise OutsideRootError(
            f"{where}: {shown if shown is not None else os.fspath(path)!r} resolves to {real}, outside the "
            f"root {real_root}; keep the paths inside the root (--root) or pass --allow-outside-root"
        )


# --------------------------------------------------------------------------------------------------
# crash-safe writes

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:  # the portable way sets it and puts it back
        old = os.umask(0o022)
        os.umask(old)
    return old


def public_file_mode() -> int:
    """Mode of a new regular file under the user's umask (0644 with the usual 022)."""
    return 0o666 & ~umask()


def public_dir_mode() -> int:
    """Mode of a new folder under the user's umask (0755 with the usual 022)."""
    return 0o777 & ~umask()


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a folder's entries (a rename, a new file) durable; a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(os.fspath(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def naming_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file as one that names ``path``.

    A failed ``write`` (a full disk: ``ENOSPC``, a quota, an I/O error) raises an ``OSError`` without a
    file name, so the CLI's one-line error could not say where; the re-raised one carries ``path``
    (also across a worker process, where the error is pickled).
    """
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        code, why = e.errno, e.strerror or (os.strerror(e.errno) if e.errno is not None else None)
        if code is None:  # numpy's short write ("N requested and M written") has no errno
            why = str(e) or type(e).__name__
            if free_bytes(Path(path).parent) < (1 << 20):
                code, why = errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({why})"
        raise OSError(code, why, os.fspath(path)) from e


def free_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes free on the disk holding ``folder``, or on its nearest existing parent.

    A file system that reports no size (some FUSE and network mounts: total 0) or cannot be asked
    counts as unbounded, so no check built on this refuses a write such a mount would take.
    """
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
    except OSError:
        return 1 << 62
    return usage.free if usage.total > 0 else 1 << 62


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """``Path(path).write_bytes(data)`` whose ``OSError`` names the file (:func:`naming_errors`)."""
    with naming_errors(path):
        Path(path).write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """``Path(path).write_text(text)`` whose ``OSError`` names the file (:func:`naming_errors`)."""
    with naming_errors(path):
        Path(path).write_text(text, encoding=encoding)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new one, never a torn one.

    Temporary file beside it, fsync, mode set (default: the umask's), ``os.replace``, fsync of the folder.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with naming_errors(out), os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, public_file_mode() if mode is None else mode)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(out.parent)
    return out


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_EXCHANGE_FN: object = None


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the OS or file system cannot (the caller then falls back to two renames);
    raises ``OSError`` for other failures.
    """
    global _EXCHANGE_FN
    if _EXCHANGE_FN is None:
        _EXCHANGE_FN = False
        with contextlib.suppress(OSError, AttributeError):
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _EXCHANGE_FN = fn
    if not _EXCHANGE_FN:
        return False
    r = _EXCHANGE_FN(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)  # type: ignore[operator]
    if r == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a))


@contextlib.contextmanager
def dir_lock(
    folder: str | os.PathLike[str], timeout_s: float = 60.0, required: bool = True
) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` (no lock file is created); yields whether it is held.

    ``required=False``: yield False instead of failing where the folder cannot be locked (read-only
    mounts, non-POSIX systems) or stays locked for ``timeout_s``.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        if required:
            yield True
        else:
            yield False
        return
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        if required:
            raise
        yield False
        return
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    if required:
                        raise
                    yield False
                    return
                if time.monotonic() > deadline:
                    if required:
                        raise FaceforgeError(
                            f"{folder} stayed locked by another process for {timeout_s:g} s"
                        ) from None
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
