"""The store's SQLite database: one connection in WAL mode, busy handling, transactions and the
key/value `meta` table (schema version, model fingerprint, change generation, index kind).

Every SQLite failure leaves here as one StoreError line naming the database file, and every write
is one BEGIN IMMEDIATE transaction, so concurrent writers queue on SQLite's lock instead of failing.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import lock_owner
from .backend import StoreDatabase

DB_NAME = "castkeep.sqlite3"
# How long a change waits in all for another process's write lock (a registration holds it for well
# under a second: photos are embedded before it is taken); $CASTKEEP_LOCK_TIMEOUT overrides it.
LOCK_TIMEOUT_ENV = "CASTKEEP_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 30.0


def lock_timeout() -> float:
    """Seconds a change waits for the write lock: $CASTKEEP_LOCK_TIMEOUT, else DEFAULT_LOCK_TIMEOUT_S."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise StoreError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds (0 or more), not '{text[:40]}'")
    return seconds


def retry_busy(action: Callable[[], Any], timeout: float) -> Any:
    """Run `action`, retrying while SQLite says "locked" until `timeout` seconds have passed in all:
    BEGIN IMMEDIATE and switching to WAL can fail at once instead of waiting for the busy timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


READ_ONLY_MESSAGE = ("store is read-only (its folder or database file cannot be written): it can be listed, "
                     "shown, searched, scored, exported and verified, but not changed")


def wal_holds_data(path: Path) -> bool:
    """Whether the database's -wal file holds changes not yet folded into the database file."""
    wal = path.with_name(path.name + "-wal")
    return wal.is_file() and wal.stat().st_size > 0


def _connect_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection. `mode=ro` reads a WAL store with its -wal file but needs the -shm file, which
    a folder nobody may write cannot get; then the database file is read as immutable, which is the whole
    store only while no -wal file holds changes (a writer that could not checkpoint: refused)."""
    uri = path.absolute().as_uri()
    try:
        return _checked(sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None,
                                        check_same_thread=False))
    except sqlite3.OperationalError as exc:
        if "unable to open" not in str(exc):
            raise
    if wal_holds_data(path):
        raise StoreError("store is read-only and its last changes are still in its -wal file (a writer "
                         "stopped before folding them in); open it once where it can be written",
                         path=path.with_name(path.name + "-wal"))
    return _checked(sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
                                    check_same_thread=False))


def _checked(connection: sqlite3.Connection) -> sqlite3.Connection:
    """SQLite opens URI files lazily: read once so that a failure shows here."""
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        connection.close()
        raise
    return connection


class Database(StoreDatabase):
    """The connection to `castkeep.sqlite3`. Open with `Database.connect(path)`."""

    path: Path

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_timeout: float, *,
                 read_only: bool = False) -> None:
        self.path = path
        self.location = os.fspath(path)
        self._connection: sqlite3.Connection | None = connection
        self.lock_timeout = lock_timeout
        self.read_only = read_only

    @classmethod
    def connect(cls, path: Path, *, read_only: bool = False) -> Database:
        """Connect with the settings every store connection needs (busy timeout, foreign keys). A
        `read_only` connection never changes the database (in a folder it may write, SQLite still keeps
        its -shm and -wal files beside it, as for any reader)."""
        timeout = lock_timeout()
        try:
            if read_only:
                connection = _connect_read_only(path, timeout)
            else:
                connection = sqlite3.connect(os.fspath(path), timeout=timeout,
                                             isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store database ({exc})", path=path) from None
        database = cls(path, connection, timeout, read_only=read_only)
        try:
            with database.guard():
                database._set_busy_timeout(timeout)
                connection.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            database.close()
            raise
        return database

    def use_wal(self) -> None:
        """Write-ahead logging (readers never wait for a writer) with an fsync at every commit."""
        if self.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            retry_busy(lambda: self.execute("PRAGMA journal_mode = WAL"), self.lock_timeout)
        self.execute("PRAGMA synchronous = FULL")

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError("store is closed", path=self.path.parent)
        return self._connection

    # -- statements -------------------------------------------------------------------------------
    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.connection.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self.connection.executemany(sql, rows)

    def tables(self) -> set[str]:
        return {row[0] for row in self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def integrity_problems(self) -> list[str]:
        """SQLite's page-level check and its foreign-key check."""
        problems = []
        integrity = [r[0] for r in self.execute("PRAGMA integrity_check").fetchall()]
        if integrity != ["ok"]:
            problems += [f"sqlite: {line}" for line in integrity[:10]]
        if self.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("references without a character")
        return problems

    # -- error mapping and transactions -------------------------------------------------------------
    @contextmanager
    def guard(self) -> Iterator[None]:
        """Every SQLite failure becomes one StoreError line naming the database."""
        if self._connection is None:
            raise StoreError("store is closed", path=self.path.parent)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(self._busy_message(), path=self.path) from None
            if "full" in str(exc) or "disk I/O" in str(exc):
                raise StoreError(self._disk_message(str(exc)), path=self.path) from None
            raise StoreError(f"store database error ({exc})", path=self.path) from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store database is corrupt ({exc}); restore it from a backup or "
                             f"an export", path=self.path) from None

    def _disk_message(self, error: str) -> str:
        """SQLite says "disk I/O error" for a full disk too: say which it is, and that nothing changed
        (the transaction was rolled back)."""
        import shutil

        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = None
        if "full" in error or (free is not None and free < 1 << 20):
            return ("no space left for the store (the disk holding it is full): nothing was changed; free some "
                    "space and try again")
        return f"the disk failed while reading or writing the store ({error}): nothing was changed"

    def _busy_message(self) -> str:
        holder = lock_owner.describe(self.path.parent)
        return (f"store is busy: another process held its write lock for over {self.lock_timeout:g} s "
                f"({holder or 'no castkeep process says it holds it'}); try again when it is done, "
                f"or wait longer with {LOCK_TIMEOUT_ENV}=SECONDS")

    def _set_busy_timeout(self, seconds: float) -> None:
        self.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    @contextmanager
    def write(self, *, wait: bool = True) -> Iterator[None]:
        """One write transaction; the lock is taken up front so concurrent writers queue, for at
        most `lock_timeout` seconds in all. Without `wait`, a lock held elsewhere fails at once (for
        optional writes, such as recording the index cache's checksum)."""
        if self.read_only:
            raise StoreError(READ_ONLY_MESSAGE, path=self.path.parent)
        if wait:
            retry_busy(lambda: self.execute("BEGIN IMMEDIATE"), self.lock_timeout)
        else:
            self._set_busy_timeout(0)
            try:
                self.execute("BEGIN IMMEDIATE")
            finally:
                self._set_busy_timeout(self.lock_timeout)
        lock_owner.claim(self.path.parent)
        try:
            try:
                yield
            except BaseException:
                if self.connection.in_transaction:  # SQLite has rolled back itself after a full disk
                    self.execute("ROLLBACK")
                raise
            self.execute("COMMIT")
        finally:
            lock_owner.release(self.path.parent)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees one consistent state of the store."""
        self.execute("BEGIN")
        try:
            yield
        finally:
            self.execute("COMMIT")
