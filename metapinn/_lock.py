"""An exclusive lock on a folder for as long as one process writes it.

Two processes writing one run folder (a second terminal, a re-submitted cluster job)
would interleave its metrics and overwrite each other's checkpoints. The lock is an
OS file lock (`flock`) on the file `.lock` in the folder: the kernel releases it when
the holding process exits, however it exits, so a killed run never leaves a stale
lock, and the next writer takes it at once. The holder writes its PID and host into
the file, for the message a refused writer gets.

Within one process the lock is re-entrant: the experiment's pipeline takes it around
a whole run, and the training and evaluation it calls take it again.
"""

import contextlib
import os
import pathlib
import socket
import threading
from collections.abc import Iterator

from ._checkpoint import RunFolderError, _write_error


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None


LOCK_FILE = ".lock"
"""The lock's file in a locked folder: left in place (empty of meaning once its holder
exits); a folder that holds only it counts as empty."""


class RunFolderBusy(RuntimeError):
    """Another process is writing the folder: the message names the folder and the
    holder's PID and host."""


_HELD: dict[pathlib.Path, tuple[int, int]] = {}
"""The folders this process holds locked: resolved path -> (file descriptor, depth)."""
_GUARD = threading.Lock()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive write lock of `folder` (created if missing) inside the
    block; re-entrant within this process.

    **Raises:** [`metapinn.RunFolderBusy`][] at once, without waiting, when another
    process holds it; [`metapinn.RunFolderError`][] when the folder or its lock file
    cannot be made, or its file system has no locks.
    """
    folder = pathlib.Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(folder, error) from error
    key = folder.resolve()
    with _GUARD:
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
        else:
            _HELD[key] = (_acquire(folder), 1)
    try:
        yield
    finally:
        with _GUARD:
            fd, depth = _HELD[key]
            if depth > 1:
                _HELD[key] = (fd, depth - 1)
            else:
                del _HELD[key]
                if fd >= 0:
                    os.close(fd)  # releases the flock


def _acquire(folder: pathlib.Path) -> int:
    if fcntl is None:  # pragma: no cover
        return -1
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:  # a read-only or full file system, no permission
        raise _write_error(path, error) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderBusy(
            f"{folder} is being written by another process ({holder}): wait for it to "
            "finish (or stop it), or choose another folder"
        ) from None
    except OSError as error:  # a file system without locks (ENOLCK, EOPNOTSUPP)
        os.close(fd)
        raise RunFolderError(
            error.errno,
            f"cannot lock {path}: {error.strerror}; the file system of {folder} has no "
            "file locks: use a folder on a local or lock-capable file system",
        ) from error
    except BaseException:
        os.close(fd)
        raise
    try:  # who holds it, for a refused writer's message: informative only
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
    except OSError:
        pass
    return fd


def is_locked_here(folder: str | os.PathLike) -> bool:
    """Whether this process holds `folder`'s lock."""
    with _GUARD:
        return pathlib.Path(folder).resolve() in _HELD
