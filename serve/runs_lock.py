"""One server per runs folder: an exclusive lock on `serve.lock` in it, held for the server's lifetime.

The server owns the job list kept in its run folders (re-read and re-queued at start), so a second server on
the same folder would run the same queued jobs twice. An advisory lock (flock) rather than a PID file: the
kernel drops it when the holder dies, even by `kill -9`, so a crashed server never leaves a stale lock behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, ServerBusyError

LOCK_NAME = "serve.lock"


class RunsLock:
    """The held lock; `release()` (or the process ending) gives it back."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, runs_root: Path) -> RunsLock:
        try:
            runs_root.mkdir(parents=True, exist_ok=True)
            fd = os.open(runs_root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot use the runs folder ({exc.strerror})", path=runs_root) from None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock; one server per folder is the operator's job
            return cls(runs_root / LOCK_NAME, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise ServerBusyError(f"another castkeep serve{who} already uses this runs folder: stop it, or give this "
                                  f"server another --runs", path=runs_root) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the next one's message
        return cls(runs_root / LOCK_NAME, fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1
