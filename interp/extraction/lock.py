"""One writer at a time: an exclusive OS lock on a file, released when its process dies.

:class:`WriterLock` holds ``flock(LOCK_EX | LOCK_NB)`` on a lock file (``msvcrt.locking``
where there is no ``fcntl``). The operating system drops the lock when the holder exits
or is killed -- ``kill -9`` included -- so a crashed writer never leaves a store locked;
the file itself stays behind and is reused. The holder writes ``"<pid> <host>"`` into it,
which is what a refused second writer is told.

``flock`` locks belong to an open file, not to a process: a second writer in the *same*
process (another thread, a second notebook call while one is still running) is refused too.
A holder may delete the lock file while it still holds it (the store does, when it
removes a store it created and left empty); a competitor that opened the old file just
before, and then locks it, would hold a lock on a deleted file, so :meth:`acquire`
checks that the file it locked is still the one at ``path`` and otherwise starts over.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = ["LockHeld", "WriterLock"]

# msvcrt locks a byte range; locking one far past the "<pid> <host>" text keeps that text readable
_WINDOWS_LOCK_OFFSET = 1 << 20


class LockHeld(RuntimeError):
    """Another open file -- usually another process -- holds the lock."""

    def __init__(self, path: Path, holder: str):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is locked by {holder}")


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError (EWOULDBLOCK) on POSIX, PermissionError on Windows
        return False
    return True


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote: ``"PID 123 on host"``."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid, _, host = os.read(fd, 512).decode("utf-8", "replace").strip().partition(" ")
    except OSError:
        pid = host = ""
    if not pid.isdigit():  # it has the lock but has not written its PID yet
        return "another writer (PID not yet recorded)"
    return f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


class WriterLock:
    """An exclusive, non-blocking lock on ``path`` (a file; created if missing).

    Example::

        lock = WriterLock(store / ".lock")
        lock.acquire()          # LockHeld("... is locked by PID 4242") if another writer has it
        try:
            ...                 # write
        finally:
            lock.release()
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this WriterLock")
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = _holder(fd)
                os.close(fd)
                raise LockHeld(self.path, holder)
            if self._is_current(fd):
                break
            os.close(fd)  # the previous holder deleted the file after we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd

    def _is_current(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self, delete: bool = False) -> None:
        """Drop the lock; ``delete`` removes the lock file first (while still holding it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if delete:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing the file releases the lock
