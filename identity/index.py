"""FAISS vector indexes over L2-normalised embeddings (inner product = cosine), usable on raw vectors.

    index = VectorIndex(kind="exact")              # or "hnsw" / "ivf" (approximate, for big stores)
    index.add(vectors, ids)                        # float32 (n, dim), int64 ids; the first add sets dim
    scores, ids = index.search(queries, k)          # best first; id -1 where fewer than k exist
    index.save(path); VectorIndex.load(path)        # atomic write; payload checksum verified on load

The file format is a small JSON header (kind, dim, count, parameters, sha256 of the FAISS payload and
caller metadata) followed by FAISS's own serialisation: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import IndexFileError
from ..utils import write_bytes_atomic

KINDS = ("exact", "hnsw", "ivf")
MAGIC = b"CASTKEEP-INDEX\x001\n"

# FAISS computes inner products with BLAS only from this many queries on; its default (20) was
# raised to 128000 in recent releases, which makes batched exact search ~8x slower than numpy at
# 1M vectors (see STACK.md). Below ~20 queries the SIMD loop is the faster path anyway.
BLAS_THRESHOLD = 20
ENV_THREADS = "CASTKEEP_FAISS_THREADS"

# Exact search over large stores scans a float16 copy first (half the memory traffic of float32,
# which is what bounds a single query), re-scores the best PREFILTER_FACTOR * k candidates from the
# float32 vectors, and proves the result exact: a float16 score is within FP16_ERROR * |q| * |y| of
# the true one, so no vector outside the candidates can beat the k-th when the last candidate's
# float16 score plus that bound is below it. Rows without that proof are searched in float32.
PREFILTER_MIN = 50_000
PREFILTER_FACTOR = 10
FP16_ERROR = 2.0 ** -11 + 1e-4  # float16 rounding of each stored value, plus float32 summation


def set_search_threads(threads: int | None = None) -> None:
    """OpenMP threads FAISS searches with (None: all cores). On an oversubscribed CPU, FAISS's
    spinning threads are slower than one: measured 0.32 s (1 thread) vs 1.60 s (2 threads) for
    100 queries over 100k x 512 on 2 busy cores, numpy 0.52 s."""
    faiss.omp_set_num_threads(int(threads) if threads else (os.cpu_count() or 1))


_configured = False


def configure_faiss() -> None:
    """Apply castkeep's process-wide FAISS settings: the BLAS threshold above, and the search
    threads from $CASTKEEP_FAISS_THREADS when set. Runs once, when the first VectorIndex is made
    (not at import, so importing castkeep never changes another library's FAISS); a later
    `set_search_threads` call wins."""
    global _configured
    if _configured:
        return
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    if os.environ.get(ENV_THREADS):
        set_search_threads(int(os.environ[ENV_THREADS]))
    _configured = True


def _as_matrix(vectors: Any, dim: int | None) -> np.ndarray:
    matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or (dim is not None and matrix.shape[1] != dim):
        raise ValueError(f"expected vectors of dimension {dim}, got shape {matrix.shape}")
    return matrix


class VectorIndex:
    """Inner-product search with integer ids: exact (flat), HNSW or IVF-flat.

    Approximate defaults (ef_search 128, nprobe 64) were chosen on 1e5 random 512-d vectors, the
    hardest case: the true nearest vector is in the top 10 for 98 % of queries (64 / 16 gave 82 % /
    85 %) at 1.5 ms / 0.6 ms per query on 2 cores, against ~28 ms for numpy's brute force.
    """

    def __init__(self, dim: int | None = None, kind: str = "exact", *, hnsw_m: int = 32,
                 ef_construction: int = 80, ef_search: int = 128, nlist: int | None = None,
                 nprobe: int = 64) -> None:
        """`dim` None: the embedding size is taken from the first vectors added."""
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r} (use one of {', '.join(KINDS)})")
        configure_faiss()
        self.dim = None if dim is None else int(dim)
        self.kind = kind
        self.params: dict[str, Any] = {"hnsw_m": hnsw_m, "ef_construction": ef_construction,
                                       "ef_search": ef_search, "nlist": nlist, "nprobe": nprobe}
        # IVF trains on its first batch, and no index can exist before its dimension is known.
        # faiss's SWIG classes are typed loosely (an IndexIDMap's `.index`, `.id_map`...): Any.
        self._index: Any = None if kind == "ivf" or dim is None else self._new_index(0)
        self._prefilter: tuple[Any, np.ndarray, float] | None = None
        # How the float16 prefilter answered query rows: proven exact, or searched again in float32.
        self.prefilter_counts = {"proven": 0, "rescanned": 0}

    # -- construction ---------------------------------------------------------------------------
    def _new_index(self, n_train: int) -> Any:
        assert self.dim is not None
        if self.kind == "exact":
            return faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))
        if self.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, int(self.params["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = int(self.params["ef_construction"])
            hnsw.hnsw.efSearch = int(self.params["ef_search"])
            return faiss.IndexIDMap(hnsw)
        # IVF: ~4 sqrt(n) lists, but at least 39 training points per list as FAISS asks.
        nlist = self.params["nlist"] or int(4 * np.sqrt(max(n_train, 1)))
        nlist = max(1, min(int(nlist), max(1, n_train // 39)))
        self.params["nlist"] = nlist
        quantizer: Any = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.own_fields = True
        quantizer.this.disown()
        ivf.nprobe = min(int(self.params["nprobe"]), nlist)
        # nlist leaves >= 39 points per list whenever there are 39; below that one list needs no clustering,
        # and FAISS's "please provide at least 39 training points" on stderr would break the CLI's one line.
        ivf.cp.min_points_per_centroid = 1
        ivf.cp.verbose = False
        return ivf

    @classmethod
    def build(cls, vectors: Any, ids: Iterable[int] | None = None, *, dim: int | None = None,
              kind: str = "exact", **params: Any) -> VectorIndex:
        matrix = np.asarray(vectors, dtype=np.float32)
        dim = dim or (matrix.shape[1] if matrix.ndim == 2 and matrix.shape[0] else None)
        index = cls(dim, kind, **params)
        if matrix.size:
            index.add(matrix, ids)
        return index

    def add(self, vectors: Any, ids: Iterable[int] | None = None) -> None:
        matrix = _as_matrix(vectors, self.dim)
        if ids is None:
            start = len(self)
            id_array = np.arange(start, start + len(matrix), dtype=np.int64)
        else:
            id_array = np.ascontiguousarray(np.fromiter(ids, dtype=np.int64))
        if len(id_array) != len(matrix):
            raise ValueError(f"{len(matrix)} vectors but {len(id_array)} ids")
        if self._index is None:  # the first batch: it sets the dimension, and IVF trains on it
            self.dim = matrix.shape[1]
            self._index = self._new_index(len(matrix))
            if self.kind == "ivf":
                self._index.train(matrix)
        self._index.add_with_ids(matrix, id_array)
        self._prefilter = None

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (exact and IVF; HNSW graphs cannot drop nodes, rebuild those instead)."""
        if self._index is None:
            return 0
        if self.kind == "hnsw":
            raise NotImplementedError("HNSW indexes cannot remove vectors; rebuild the index")
        id_array = np.fromiter(ids, dtype=np.int64)
        self._prefilter = None
        return int(self._index.remove_ids(faiss.IDSelectorBatch(id_array)))

    # -- queries --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k), best first; missing slots hold -inf and -1."""
        matrix = _as_matrix(queries, self.dim)
        if self._index is None or len(self) == 0 or k <= 0:
            k = max(k, 0)
            return (np.full((len(matrix), k), -np.inf, dtype=np.float32),
                    np.full((len(matrix), k), -1, dtype=np.int64))
        if self.kind == "exact" and len(self) >= PREFILTER_MIN and len(matrix) < BLAS_THRESHOLD:
            scores, ids = self._search_prefiltered(matrix, int(k))
        else:
            scores, ids = self._index.search(matrix, int(k))
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids

    def prepare(self) -> None:
        """Build what the first large exact search would build (the float16 copy), so timing and
        memory can be measured apart from queries. A no-op for small or approximate indexes."""
        if self.kind == "exact" and len(self) >= PREFILTER_MIN:
            self._prefilter_parts()

    def _prefilter_parts(self) -> tuple[Any, np.ndarray, float]:
        if self._prefilter is None:
            dim = int(self.dim or 0)  # set: only a non-empty index is prefiltered
            flat: Any = faiss.downcast_index(self._index.index)
            vectors = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * dim).reshape(-1, dim)
            half = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
            half.add(vectors)
            max_norm = float(np.sqrt((vectors.astype(np.float64) ** 2).sum(axis=1).max()))
            self._prefilter = (half, faiss.vector_to_array(self._index.id_map).astype(np.int64), max_norm)
        return self._prefilter

    def _search_prefiltered(self, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        half, id_map, max_norm = self._prefilter_parts()
        flat: Any = faiss.downcast_index(self._index.index)
        n = len(self)
        k = min(k, n)
        candidates = min(n, k * PREFILTER_FACTOR)
        rough, positions = half.search(matrix, candidates)
        scores = np.empty((len(matrix), k), dtype=np.float32)
        ids = np.empty((len(matrix), k), dtype=np.int64)
        for row, query in enumerate(matrix):
            found = positions[row][positions[row] >= 0]
            exact = flat.reconstruct_batch(found) @ query
            best = np.argsort(-exact, kind="stable")[:k]
            bound = FP16_ERROR * float(np.linalg.norm(query)) * max_norm
            proven = candidates >= n or exact[best[-1]] > rough[row, -1] + bound
            self.prefilter_counts["proven" if proven else "rescanned"] += 1
            if proven:
                scores[row], ids[row] = exact[best], id_map[found[best]]
            else:
                row_scores, row_ids = self._index.search(query[None, :], k)
                scores[row], ids[row] = row_scores[0], row_ids[0]
        return scores, ids

    def ids(self) -> np.ndarray:
        """All stored ids (exact and HNSW keep them in the IDMap; IVF in its inverted lists)."""
        if self._index is None:
            return np.zeros(0, dtype=np.int64)
        if isinstance(self._index, faiss.IndexIDMap):
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self._index)
        invlists: Any = ivf.invlists
        parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                 for i in range(ivf.nlist) if invlists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    # -- persistence ----------------------------------------------------------------------------
    def to_bytes(self, meta: dict[str, Any] | None = None) -> bytes:
        payload = b"" if self._index is None else faiss.serialize_index(self._index).tobytes()
        header = {"kind": self.kind, "dim": self.dim, "count": len(self), "params": self.params,
                  "sha256": hashlib.sha256(payload).hexdigest(), "meta": meta or {}}
        header_bytes = json.dumps(header, sort_keys=True).encode()
        return MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes + payload

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "index") -> tuple[VectorIndex, dict[str, Any]]:
        """The index and its caller metadata; IndexFileError when anything does not add up."""
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            raise IndexFileError("not a castkeep index file", path=source)
        (length,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
        start = len(MAGIC) + 4
        try:
            header = json.loads(data[start:start + length])
            kind, count = header["kind"], int(header["count"])
            dim = None if header["dim"] is None else int(header["dim"])
        except (ValueError, KeyError, TypeError):
            raise IndexFileError("index header is corrupt", path=source) from None
        payload = data[start + length:]
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise IndexFileError("index checksum mismatch (truncated or tampered)", path=source)
        index = cls(dim, kind, **header.get("params", {}))
        if payload:
            try:
                index._index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
            except RuntimeError:
                raise IndexFileError("FAISS could not read the index payload", path=source) from None
            if kind == "hnsw":
                hnsw: Any = faiss.downcast_index(index._index.index)
                hnsw.hnsw.efSearch = int(index.params["ef_search"])
            elif kind == "ivf":
                faiss.extract_index_ivf(index._index).nprobe = int(index.params["nprobe"])
        if len(index) != count or index._index is not None and index._index.d != dim:
            raise IndexFileError("index header does not match its payload", path=source)
        return index, header.get("meta", {})

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> bytes:
        """Write atomically (temporary file + fsync + rename); returns the bytes written."""
        path = Path(path)
        data = self.to_bytes(meta)
        write_bytes_atomic(path, data)
        return data

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[VectorIndex, dict[str, Any]]:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IndexFileError("index file not found", path=path) from None
        except OSError as exc:
            raise IndexFileError(f"cannot read index file ({exc.strerror})", path=path) from None
        return cls.from_bytes(data, source=os.fspath(path))
