"""What the store's rows, integrity checks and search need from a database, whichever holds the store:
`StoreDatabase` is the seam between the Store facade and its two backends, SQLite (identity/database.py,
a folder on this machine) and PostgreSQL with pgvector (identity/postgres.py, a team's server).

Both take the same SQL (rows.py writes it once, with `?` placeholders), keep the same tables and the
same key/value `meta` table (schema version, model fingerprint, change generation, index kind), and
give the same guarantees: every change is one transaction that takes the store's write lock up front,
so concurrent writers queue instead of losing work, for at most `lock_timeout` seconds in all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np


class StoreDatabase(ABC):
    """One connection to a store's database. `location` names it in messages (a file, or a URL
    without its password); `path` is the SQLite file, None for a server."""

    read_only: bool
    lock_timeout: float
    path: Path | None
    location: str
    _connection: Any  # the driver's connection; None once closed

    # -- statements -------------------------------------------------------------------------------
    @abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement (`?` placeholders); returns a cursor (fetchone, fetchall, iteration, rowcount)."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one statement for each row of arguments."""

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def closed(self) -> bool:
        return self._connection is None

    # -- errors and transactions ------------------------------------------------------------------
    @abstractmethod
    def guard(self) -> AbstractContextManager[None]:
        """Every database failure inside becomes one StoreError line naming the store."""

    @abstractmethod
    def write(self, *, wait: bool = True) -> AbstractContextManager[None]:
        """One write transaction holding the store's write lock, taken up front (without `wait`, a
        lock held elsewhere fails at once)."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[None]:
        """A read transaction: every query inside sees one consistent state of the store."""

    @abstractmethod
    def integrity_problems(self) -> list[str]:
        """The database engine's own checks (pages, foreign keys), as problem lines."""

    # -- hooks for the search of a server store ---------------------------------------------------
    def index_vector(self, character_id: int, vector: np.ndarray) -> None:
        """Inside a write: the character's primary-space vector was written (SQLite's search is the FAISS
        cache beside it, rebuilt from the rows; a server keeps its search column in the same transaction)."""
        return None

    def restore_ids(self) -> None:
        """Inside a write, after rows were inserted with explicit ids (`castkeep store copy`): new rows
        must get ids above them (SQLite's AUTOINCREMENT does this by itself)."""
        return None

    # -- the meta table ---------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                     "SET value = excluded.value", (key, value))

    def generation(self) -> int:
        """How many changes the store has seen: the index cache is current when it matches. It is
        -1 when its record is damaged: no index cache matches it, so queries rebuild the index, and the
        next change repairs it (`verify` reports it)."""
        text = self.meta("generation")
        if text is None:
            return 0
        return int(text) if text.isdigit() else -1

    def bump_generation(self) -> int:
        current = self.generation()
        if current < 0:  # damaged: go on after whatever the index cache recorded, so that cache is stale
            cached = self.meta("index_generation")
            current = int(cached) if cached is not None and cached.isdigit() else 0
        generation = current + 1
        self.set_meta("generation", str(generation))
        return generation

