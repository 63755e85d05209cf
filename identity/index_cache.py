"""The store's FAISS index: a cache of the character vectors, derived from the database.

`index.faiss` is trusted only when its sha256 and the generation it was built at are the ones the
database recorded; otherwise it is stale (another writer changed the store), corrupt or missing,
and is rebuilt from the database. A process keeps the index in memory and patches it after its own
writes, so a registration does not rebuild the whole index.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import IndexFileError, StoreError
from . import rows
from .backend import StoreDatabase
from .index import KINDS, VectorIndex

logger = logging.getLogger(__name__)

INDEX_NAME = "index.faiss"


def checked_kind(recorded: str | None) -> str:
    """The index kind the store records (exact when none); StoreError for one this castkeep does not
    know (a damaged or edited meta row), naming the command that resets it."""
    kind = recorded or "exact"
    if kind not in KINDS:
        raise StoreError(f"the store records an unknown index kind {kind!r}; `castkeep verify --index exact` "
                         f"resets it")
    return kind


class Searchable(Protocol):
    """A search over the character vectors: FAISS in memory (VectorIndex) or pgvector in the server."""

    dim: int | None

    def __len__(self) -> int: ...

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def ids(self) -> np.ndarray: ...


class SearchIndex(Protocol):
    """What the Store and `verify` need of a store's search: IndexCache (SQLite) or PgVectorSearch."""

    @property
    def kind(self) -> str: ...

    def set_kind(self, kind: str) -> None: ...

    def forget(self) -> None: ...

    def current(self) -> Searchable: ...

    def rebuild(self) -> dict[str, Any]: ...

    def apply(self, generation: int, *, add: dict[int, np.ndarray] | None = None, remove: Sequence[int] = ()) -> None: ...

    def load_file(self, generation: int) -> tuple[Any, str]: ...


class IndexCache:
    """The current VectorIndex of one store: in memory, in `index.faiss`, or rebuilt."""

    def __init__(self, db: StoreDatabase, path: Path) -> None:
        self.db = db
        self.path = path
        self._index: VectorIndex | None = None
        self._generation = -1  # the store generation `_index` reflects

    @property
    def kind(self) -> str:
        with self.db.guard():
            return checked_kind(self.db.meta("index_kind"))

    def set_kind(self, kind: str) -> None:
        """Choose exact (flat) search or an approximate index (hnsw, ivf) for large stores."""
        if kind not in KINDS:
            raise StoreError(f"unknown index kind '{kind}' (use {', '.join(KINDS)})")
        with self.db.guard():
            if self.db.meta("index_kind") != kind:
                with self.db.write():
                    self.db.set_meta("index_kind", kind)
                    self.db.set_meta("index_generation", "-1")
                self.forget()

    def forget(self) -> None:
        """Drop the in-memory index; the next `current()` loads or rebuilds it."""
        self._index, self._generation = None, -1

    def current(self) -> VectorIndex:
        """The index for the store as it is now: in memory, from the file, or rebuilt."""
        with self.db.guard():
            generation = self.db.generation()
        if self._index is not None and self._generation == generation:
            return self._index
        index, state = self.load_file(generation)
        if index is None:
            if state == "corrupt":
                logger.info("index file %s failed its checksum; rebuilt from the database", self.path)
            index, generation = self._build()
            self._save(index, generation)
        self._index, self._generation = index, generation
        return index

    def rebuild(self) -> dict[str, Any]:
        """Rebuild the index (memory and file) from the database now."""
        index, generation = self._build()
        self._save(index, generation)
        self._index, self._generation = index, generation
        return {"kind": index.kind, "count": len(index), "generation": generation}

    def apply(self, generation: int, *, add: dict[int, np.ndarray] | None = None,
              remove: Sequence[int] = ()) -> None:
        """Patch the in-memory index after our own write (which made `generation`), when it was
        current before that write; otherwise leave it to be reloaded."""
        if self._index is None or self._generation != generation - 1:
            self.forget()
            return
        try:
            if remove:
                self._index.remove(remove)
            if add:
                self._index.add(np.stack(list(add.values())), list(add))
        except NotImplementedError:  # HNSW cannot remove: rebuild lazily
            self.forget()
            return
        self._generation = generation
        self._save(self._index, generation)

    def load_file(self, generation: int) -> tuple[VectorIndex | None, str]:
        """The cached index if it is the current one, else None and why not: "missing",
        "unreadable", "stale" or "corrupt"."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, "missing"
        except OSError:
            return None, "unreadable"
        with self.db.guard():
            recorded_generation = self.db.meta("index_generation")
            recorded_sha = self.db.meta("index_sha256")
        recorded = int(recorded_generation) if recorded_generation is not None and recorded_generation.isdigit() else None
        if hashlib.sha256(data).hexdigest() != recorded_sha:
            # Either a newer/older writer's file or a tampered one: only the DB can tell which.
            return (None, "corrupt") if recorded == generation else (None, "stale")
        if recorded != generation:  # a damaged record counts as stale: the cache is rebuilt
            return None, "stale"
        try:
            index, meta = VectorIndex.from_bytes(data, source=os.fspath(self.path))
        except IndexFileError:
            return None, "corrupt"
        if meta.get("generation") != generation or index.kind != self.kind:
            return None, "stale"
        return index, "current"

    def _build(self) -> tuple[VectorIndex, int]:
        """Build the index from the database, in one consistent snapshot."""
        with self.db.guard():
            with self.db.snapshot():
                generation = self.db.generation()
                kind = checked_kind(self.db.meta("index_kind"))
                ids, vectors = rows.character_vectors(self.db)
        # The embedding size comes from the stored vectors; an empty store's index takes it from
        # the first vector added.
        index = VectorIndex(None if vectors is None else vectors.shape[1], kind)
        if vectors is not None:
            index.add(vectors, ids)
        return index, generation

    def _save(self, index: VectorIndex, generation: int) -> None:
        """Write the cache file, then record its checksum if the store has not changed since."""
        if self.db.read_only:
            return  # a read-only store's queries use the index in memory
        try:
            data = index.save(self.path, meta={"generation": generation})
        except OSError as exc:  # a read-only store still answers queries from memory
            logger.info("could not write the index cache: %s", exc)
            return
        digest = hashlib.sha256(data).hexdigest()
        try:
            with self.db.guard():
                # Never wait for the lock here: a query must not hang behind another process's
                # write; the next process that finds the lock free records its own rebuild.
                with self.db.write(wait=False):
                    if self.db.generation() == generation:
                        self.db.set_meta("index_generation", str(generation))
                        self.db.set_meta("index_sha256", digest)
        except StoreError as exc:  # the lock is held elsewhere, or the database is read-only
            logger.info("could not record the index checksum: %s", exc)
