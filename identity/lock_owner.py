"""Who holds a store's write lock: a small JSON note (`lock-owner.json`) that a castkeep writer leaves in
the store folder while it holds the lock, so that a process which gives up waiting can say whom it waited
for. Best effort only: SQLite's lock is the real one, any process (the sqlite3 shell, another program) can
hold it without a note, and a writer killed with the lock leaves a note whose process no longer runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from ..utils import utc_now

LOCK_OWNER_NAME = "lock-owner.json"
_MAX_NOTE_BYTES = 4096


def _command() -> str:
    words = [os.path.basename(sys.argv[0] or "python")] + sys.argv[1:]
    return " ".join(words)[:200]


def claim(folder: Path) -> None:
    """Leave the note: this process holds the store's write lock now."""
    note = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
            "since": utc_now()}
    try:
        (folder / LOCK_OWNER_NAME).write_text(json.dumps(note, ensure_ascii=False), encoding="utf-8")
    except OSError:
        pass  # a full disk or a read-only folder: the note is only a courtesy


def release(folder: Path) -> None:
    """Remove the note if it is still this process's (a killed writer's successor may have replaced it)."""
    path = folder / LOCK_OWNER_NAME
    note = _read(path)
    if note is not None and note.get("pid") == os.getpid() and note.get("host") == socket.gethostname():
        try:
            path.unlink()
        except OSError:
            pass


def describe(folder: Path) -> str | None:
    """The lock holder in words ("pid 123 on host, `castkeep register ...`, since ..."), or None when
    no live castkeep process left a note."""
    note = _read(folder / LOCK_OWNER_NAME)
    if note is None or not isinstance(note.get("pid"), int):
        return None
    pid, host = note["pid"], str(note.get("host", "?"))
    if pid <= 0:
        return None
    if host == socket.gethostname() and not _alive(pid):
        return None  # a writer killed while holding the lock: the lock went with it
    return (f"pid {pid} on {host}, `{str(note.get('command', '?'))[:200]}`, "
            f"holding it since {str(note.get('since', '?'))[:40]}")


def _read(path: Path) -> dict | None:
    try:
        with open(path, "rb") as handle:
            note = json.loads(handle.read(_MAX_NOTE_BYTES))
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True
