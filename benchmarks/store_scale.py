"""How the store's vector indexes scale: per-query latency, batch throughput, recall@10, build time
and memory for exact / HNSW / IVF (castkeep.identity.index.VectorIndex), each against a numpy
brute-force baseline (`db @ q` + argpartition) measured in the same run on the same vectors.

Data: seeded random unit vectors in 512-d stand in for stored embeddings; each query is a stored
vector plus noise scaled so its cosine to that vector is about 0.7 (a typical same-person score),
so every query has a true nearest neighbour, as an identify call on a registered person does.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError
from ..identity.index import VectorIndex
from ..utils import Progress, no_progress

DIM = 512
TOP_K = 10
KINDS = ("exact", "hnsw", "ivf")



def parse_sizes(text: str) -> list[int]:
    """'1e4,1e5,1e6' or '10000,100000' → [10000, 100000, ...]."""
    sizes = []
    for token in text.split(","):
        token = token.strip()
        if not token:
            continue
        try:
            value = float(token)
        except ValueError:
            raise BenchmarkInputError(f"size '{token}' is not a number (use e.g. 1e4,1e5)") from None
        if not (1 <= value <= 5e7 and value == int(value)):  # nan and inf fail the range first
            raise BenchmarkInputError(f"size '{token}' must be a whole number from 1 to 5e7")
        sizes.append(int(value))
    if not sizes:
        raise BenchmarkInputError("no sizes given")
    return sizes


def unit_vectors(n: int, rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks keep the float64 temporaries small
        chunk = rng.standard_normal((min(100_000, n - start), dim)).astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start:start + len(chunk)] = chunk
    return vectors


def make_queries(db: np.ndarray, n_queries: int, rng: np.random.Generator,
                 cosine: float = 0.7) -> np.ndarray:
    picks = rng.integers(0, len(db), size=n_queries)
    noise = unit_vectors(n_queries, rng, db.shape[1])
    # cos(q, db[i]) ≈ cosine for unit vectors mixed as c·x + sqrt(1-c²)·n with n ⟂ x (nearly, in 512-d)
    queries = cosine * db[picks] + np.sqrt(1 - cosine ** 2) * noise
    # float32 like the database: a float64 query would make numpy upcast the whole database per call.
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def numpy_search(db: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: one matrix product, argpartition for the top k, then sort those k."""
    scores = queries @ db.T
    k = min(k, db.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1)
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1)


def _rss() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


def _openblas() -> Any:
    """numpy's bundled OpenBLAS (ctypes), to pin it to one thread for single queries; None if the
    build has another BLAS."""
    import ctypes
    import glob
    import os

    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(folder, "*openblas*")):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "")):
            setter = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
            getter = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                return setter, getter
    return None


def _interleaved_latencies(searches: dict[str, Callable[[np.ndarray], Any]],
                           queries: np.ndarray) -> dict[str, dict[str, Any]]:
    """Single-query latency (identify answers one photo at a time) and batched throughput.

    The methods take turns query by query, so load from other processes on a shared machine hits
    the baseline and the indexes alike and their ratio stays meaningful."""
    import faiss

    times: dict[str, list[float]] = {name: [] for name in searches}
    for search in searches.values():
        search(queries[:1])  # warm-up
    # One FAISS thread for single queries: an idle OpenMP pool spin-waits and starves BLAS (and
    # itself) of cores on a small machine, adding ~10 ms to every call, baseline included.
    # numpy's OpenBLAS likewise, so the baseline is not slowed by its own thread pool either.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    blas = _openblas()
    blas_threads = blas[1]() if blas else None
    if blas:
        blas[0](1)
    try:
        for q in queries:
            for name, search in searches.items():
                start = time.perf_counter()
                search(q[None, :])
                times[name].append(time.perf_counter() - start)
    finally:
        faiss.omp_set_num_threads(threads)
        if blas:
            blas[0](blas_threads)
    result = {}
    for name, search in searches.items():
        start = time.perf_counter()
        search(queries)
        batch = time.perf_counter() - start
        times_ms = np.asarray(times[name]) * 1e3
        result[name] = {"p50_ms": float(np.median(times_ms)), "p95_ms": float(np.percentile(times_ms, 95)),
                        "mean_ms": float(times_ms.mean()),
                        "batch_queries_per_s": len(queries) / batch if batch > 0 else None}
    return result


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top-k that the approximate top-k also holds."""
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.sum(hits) / truth.size)


def nearest_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of queries whose exact nearest neighbour is in the approximate top-k (what identify
    needs: the registered person among the candidates)."""
    return float(np.mean([t[0] in set(f.tolist()) for f, t in zip(found, truth, strict=True)]))


def bench_size(n: int, *, kinds: Iterable[str] = KINDS, n_queries: int = 100, seed: int = 0,
               index_params: dict[str, Any] | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    db = unit_vectors(n, rng)
    queries = make_queries(db, n_queries, rng)
    k = min(TOP_K, n)
    truth_scores, truth = numpy_search(db, queries, k)
    row: dict[str, Any] = {"size": n, "queries": n_queries, "k": k,
                           "numpy": {"memory_bytes": int(db.nbytes)}, "indexes": {}}
    indexes: dict[str, VectorIndex] = {}
    for kind in kinds:
        gc.collect()
        rss_before = _rss()
        start = time.perf_counter()
        indexes[kind] = VectorIndex.build(db, kind=kind, **(index_params or {}).get(kind, {}))
        indexes[kind].prepare()  # large exact indexes build their float16 copy here, not in a query
        build_s = time.perf_counter() - start
        rss_after = _rss()
        _, found = indexes[kind].search(queries, k)
        row["indexes"][kind] = {
            "build_s": build_s,
            "recall_at_10": recall_at_k(found, truth),
            "nearest_in_top_10": nearest_recall(found, truth),
            # RSS growth while building: the index's own copy of the vectors plus its structures
            "memory_bytes": None if rss_before is None or rss_after is None else max(rss_after - rss_before, 0),
            "params": {key: v for key, v in indexes[kind].params.items()
                       if (kind == "hnsw" and key in ("hnsw_m", "ef_construction", "ef_search"))
                       or (kind == "ivf" and key in ("nlist", "nprobe"))},
        }
    searches: dict[str, Callable[[np.ndarray], Any]] = {"numpy": lambda q: numpy_search(db, q, k)}
    for kind, index in indexes.items():
        searches[kind] = (lambda ix: lambda q: ix.search(q, k))(index)
    latencies = _interleaved_latencies(searches, queries)
    baseline = latencies.pop("numpy")
    row["numpy"].update(baseline)
    for kind, latency in latencies.items():
        row["indexes"][kind].update(latency)
        row["indexes"][kind]["speedup_p50_vs_numpy"] = (baseline["p50_ms"] / latency["p50_ms"]
                                                       if latency["p50_ms"] > 0 else None)
        row["indexes"][kind]["batch_speedup_vs_numpy"] = (
            latency["batch_queries_per_s"] / baseline["batch_queries_per_s"]
            if latency["batch_queries_per_s"] and baseline["batch_queries_per_s"] else None)
    row["nearest_true_cosine_mean"] = float(truth_scores[:, 0].mean())
    return row


def run_store_scale(sizes: list[int], *, kinds: Iterable[str] = KINDS, n_queries: int = 100, seed: int = 0,
                    progress: Progress = no_progress) -> dict[str, Any]:
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise BenchmarkInputError(f"unknown index kind(s) {', '.join(unknown)} (use {', '.join(KINDS)})")
    rows = [bench_size(n, kinds=kinds, n_queries=n_queries, seed=seed)
            for n in progress(sizes, label="store sizes", total=len(sizes))]
    return {"bench": "store", "dim": DIM, "seed": seed, "queries": n_queries, "kinds": kinds,
            "query_model": "stored vector + noise, cosine ~0.7 to it", "sizes": rows}


def summary_text(result: dict[str, Any]) -> str:
    from .report import table

    rows = []
    for row in result["sizes"]:
        base = row["numpy"]
        rows.append([f"{row['size']:,}", "numpy (baseline)", base["p50_ms"], base["batch_queries_per_s"], 1.0,
                     1.0, 1.0, None, base["memory_bytes"] / 2**20])
        for kind, data in row["indexes"].items():
            rows.append(["", kind, data["p50_ms"], data["batch_queries_per_s"], data["speedup_p50_vs_numpy"],
                         data["recall_at_10"], data["nearest_in_top_10"], data["build_s"],
                         None if data["memory_bytes"] is None else data["memory_bytes"] / 2**20])
    return (f"store scale: {result['dim']}-d unit vectors, {result['queries']} queries, top-{TOP_K}\n"
            + table(rows, ["size", "search", "p50 ms", "batch q/s", "speedup", "recall@10", "NN in 10", "build s", "MiB"]))
