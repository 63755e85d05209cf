"""A PostgreSQL store's search: pgvector over the `characters.search` column.

`exact` (the default) orders every character by inner product in a sequential scan: the same top-k and
scores as the SQLite store's exact FAISS search (float32 arithmetic on the same float32 vectors). `hnsw`
and `ivf` build pgvector's HNSW or IVFFlat index over the column (inner-product operator class; the
vectors are unit length, so it is the cosine ranking) for large stores. The column is written in the
same transaction as the character's vector, so unlike the SQLite store's FAISS file there is no cache to
go stale; `rebuild` rewrites the column and the index from the stored vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import StoreError
from . import rows
from .index import KINDS
from .index_cache import checked_kind
from .postgres import PostgresDatabase

ANN_INDEX = "characters_search_ann"
# The same defaults as the FAISS indexes (identity/index.py).
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_PROBES = 64


class PgVectorIndex:
    """The search as the Store sees it (the same calls as identity/index.py's VectorIndex)."""

    def __init__(self, db: PostgresDatabase, kind: str, dim: int | None, count: int) -> None:
        self.db = db
        self.kind = kind
        self.dim = dim
        self._count = count

    def __len__(self) -> int:
        return self._count

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k), best first; missing slots hold -inf and -1."""
        matrix = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        scores = np.full((len(matrix), max(k, 0)), -np.inf, dtype=np.float32)
        ids = np.full((len(matrix), max(k, 0)), -1, dtype=np.int64)
        if k <= 0 or self.dim is None:
            return scores, ids
        # The approximate kinds search the indexed expression (a typed cast), exact the plain column,
        # which no index covers: a scan that compares with every character.
        column = "search" if self.kind == "exact" else f"(search::vector({self.dim}))"
        with self.db.guard(), self.db.snapshot():
            if self.kind == "hnsw":
                self.db.execute(f"SET LOCAL hnsw.ef_search = {max(HNSW_EF_SEARCH, k)}")
            elif self.kind == "ivf":
                self.db.execute(f"SET LOCAL ivfflat.probes = {IVF_PROBES}")
            for row, query in enumerate(matrix):
                found = self.db.execute(
                    f"SELECT id, ({column} <#> ?) FROM characters WHERE search IS NOT NULL "
                    f"ORDER BY {column} <#> ? LIMIT ?", (query, query, int(k))).fetchall()
                for slot, (character_id, distance) in enumerate(found):
                    ids[row, slot], scores[row, slot] = character_id, -distance  # <#> is the negative product
        return scores, ids

    def ids(self) -> np.ndarray:
        with self.db.guard():
            return np.array([r[0] for r in self.db.execute("SELECT id FROM characters WHERE search IS NOT NULL "
                                                           "ORDER BY id")], dtype=np.int64)


class PgVectorSearch:
    """The search of one PostgreSQL store (the same calls as identity/index_cache.py's IndexCache)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    @property
    def kind(self) -> str:
        with self.db.guard():
            return checked_kind(self.db.meta("index_kind"))

    def set_kind(self, kind: str) -> None:
        """Exact search, or pgvector's HNSW / IVFFlat index (built now, over every stored vector)."""
        if kind not in KINDS:
            raise StoreError(f"unknown index kind '{kind}' (use {', '.join(KINDS)})")
        with self.db.guard():
            if self.db.meta("index_kind") != kind:
                with self.db.write():
                    self.db.set_meta("index_kind", kind)
                    self._build_index(kind)

    def _build_index(self, kind: str) -> None:
        """Inside a write: (re)make the approximate index for `kind` (none for exact)."""
        self.db.execute(f"DROP INDEX IF EXISTS {ANN_INDEX}")
        dim = self._dim()
        if kind == "exact" or dim is None:
            return  # an empty store's index is made at its first character (see `current`)
        if kind == "hnsw":
            self.db.execute(f"CREATE INDEX {ANN_INDEX} ON characters USING hnsw ((search::vector({dim})) "
                            f"vector_ip_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")
        else:
            lists = max(1, int(np.sqrt(rows.count(self.db))))
            self.db.execute(f"CREATE INDEX {ANN_INDEX} ON characters USING ivfflat ((search::vector({dim})) "
                            f"vector_ip_ops) WITH (lists = {lists})")

    def _dim(self) -> int | None:
        text = self.db.meta("dim")
        return int(text) if text is not None and text.isdigit() else None

    def _has_index(self) -> bool:
        return self.db.execute("SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ?",
                               (ANN_INDEX,)).fetchone() is not None

    def forget(self) -> None:
        """Nothing is cached in memory: every search asks the server."""

    def apply(self, generation: int, *, add: dict[int, np.ndarray] | None = None, remove: Sequence[int] = ()) -> None:
        """Nothing to patch: the search column changed in the write's own transaction."""

    def current(self) -> PgVectorIndex:
        with self.db.guard():
            kind = checked_kind(self.db.meta("index_kind"))
            dim = self._dim()
            count = int(self.db.execute("SELECT COUNT(*) FROM characters WHERE search IS NOT NULL").fetchone()[0])
            if kind != "exact" and dim is not None and not self.db.read_only and not self._has_index():
                try:  # the store got its first character (and so its size) after the kind was chosen
                    with self.db.write(wait=False):
                        if not self._has_index():
                            self._build_index(kind)
                except StoreError:
                    pass  # busy: searched exactly meanwhile, indexed by a later query
        return PgVectorIndex(self.db, kind, dim, count)

    def rebuild(self) -> dict[str, Any]:
        """Rewrite every character's search vector from its stored primary vector, and remake the index."""
        with self.db.guard():
            with self.db.write():
                ids, vectors = rows.character_vectors(self.db)
                self.db.execute("UPDATE characters SET search = NULL")
                for character_id, vector in zip(ids.tolist(), [] if vectors is None else vectors, strict=False):
                    self.db.index_vector(character_id, vector)
                kind = checked_kind(self.db.meta("index_kind"))
                self._build_index(kind)
                generation = self.db.generation()
        return {"kind": kind, "count": len(ids), "generation": generation}

    def load_file(self, generation: int) -> tuple[None, str]:
        """For `verify`: "current" when every character's search vector is its stored primary vector, else
        "stale" (rows written by hand, or a character with no vector in the primary space)."""
        with self.db.guard(), self.db.snapshot():
            ids, vectors = rows.character_vectors(self.db)
            searched = {int(r[0]): r[1] for r in self.db.execute("SELECT id, search FROM characters "
                                                                 "WHERE search IS NOT NULL")}
        if set(searched) != set(ids.tolist()):
            return None, "stale"
        for character_id, vector in zip(ids.tolist(), [] if vectors is None else vectors, strict=False):
            if not np.array_equal(_as_array(searched[character_id]), vector):
                return None, "stale"
        return None, "current"


def _as_array(value: Any) -> np.ndarray:
    """A `vector` column's value (a numpy array once pgvector's types are registered) as float32."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)
