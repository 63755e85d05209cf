"""The store's SQLite database: one connection in WAL mode, busy handling, transactions and the
key/value `meta` table (schema version, model fingerprint, change generation, index kind).

Every SQLite failure leaves here as one StoreError line naming the database file, and every write
is one BEGIN IMMEDIATE transaction, so concurrent writers queue on SQLite's lock instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError

DB_NAME = "castkeep.sqlite3"
BUSY_TIMEOUT_S = 120.0     # concurrent registrations wait for each other this long


def retry_busy(action: Callable[[], Any], attempts: int = 50) -> Any:
    """Run `action`, retrying while SQLite says "locked": BEGIN IMMEDIATE and switching to WAL
    can fail at once instead of waiting for the busy timeout."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


class Database:
    """The connection to `castkeep.sqlite3`. Open with `Database.connect(path)`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection

    @classmethod
    def connect(cls, path: Path) -> Database:
        """Connect with the settings every store connection needs (busy timeout, foreign keys)."""
        try:
            connection = sqlite3.connect(os.fspath(path), timeout=BUSY_TIMEOUT_S,
                                         isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store database ({exc})", path=path) from None
        database = cls(path, connection)
        try:
            with database.guard():
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                connection.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            database.close()
            raise
        return database

    def use_wal(self) -> None:
        """Write-ahead logging (readers never wait for a writer) with an fsync at every commit."""
        if self.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            retry_busy(lambda: self.execute("PRAGMA journal_mode = WAL"))
        self.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def closed(self) -> bool:
        return self._connection is None

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
                raise StoreError(f"store is busy (another process held its lock for over "
                                 f"{BUSY_TIMEOUT_S:.0f} s)", path=self.path) from None
            raise StoreError(f"store database error ({exc})", path=self.path) from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store database is corrupt ({exc}); restore it from a backup or "
                             f"an export", path=self.path) from None

    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction; the lock is taken up front so concurrent writers queue."""
        retry_busy(lambda: self.execute("BEGIN IMMEDIATE"))
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees one consistent state of the store."""
        self.execute("BEGIN")
        try:
            yield
        finally:
            self.execute("COMMIT")

    # -- the meta table ---------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                     "SET value = excluded.value", (key, value))

    def generation(self) -> int:
        """How many changes the store has seen: the index cache is current when it matches."""
        return int(self.meta("generation") or 0)

    def bump_generation(self) -> int:
        generation = self.generation() + 1
        self.set_meta("generation", str(generation))
        return generation
