"""VectorIndex: exact search agrees with numpy, approximate kinds recall well, files are verified."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest

from castkeep.identity.index import IndexFileError, VectorIndex


def unit_vectors(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ base.T), axis=1)[:, :k]


def test_exact_matches_numpy_with_custom_ids():
    base, queries = unit_vectors(3000), unit_vectors(50, seed=1)
    ids = np.arange(3000, dtype=np.int64) * 7 + 100
    index = VectorIndex.build(base, ids, kind="exact")
    scores, found = index.search(queries, 10)
    expected = brute_force(base, queries, 10)
    assert np.array_equal(found, ids[expected])
    assert np.allclose(scores, np.take_along_axis(queries @ base.T, expected, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def distances_computed(kind: str) -> int:
    """How many vector comparisons FAISS made since the last reset (per-kind global counters)."""
    if kind == "ivf":
        return int(faiss.cvar.indexIVF_stats.ndis)
    stats = faiss.cvar.hnsw_stats
    # FAISS < 1.9 counts HNSW's distance computations in n3 and leaves ndis at 0.
    return int(stats.ndis or stats.n3)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_recall_without_scanning_everything(kind):
    # Clustered data, like face embeddings (several photos per person), large enough that IVF has
    # more lists (4 sqrt(n), at most n / 39 = 128) than it probes (64): at 2,000 vectors it would
    # probe every list, an exact scan that proves nothing about approximation.
    centres = unit_vectors(1000, seed=2)
    base = centres.repeat(5, axis=0) + 0.05 * unit_vectors(5000, seed=3)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = (centres[:100] + 0.05 * unit_vectors(100, seed=4)).astype(np.float32)
    index = VectorIndex.build(base, kind=kind)
    if kind == "ivf":
        assert index.params["nlist"] > index.params["nprobe"]
    faiss.cvar.indexIVF_stats.reset()
    faiss.cvar.hnsw_stats.reset()
    _, found = index.search(queries, 5)
    expected = brute_force(base, queries, 5)
    recall = np.mean([len(set(f) & set(e)) / 5 for f, e in zip(found, expected, strict=True)])
    compared = distances_computed(kind)
    print(f"{kind}: recall@5 {recall:.3f}, {compared / (len(queries) * len(base)):.0%} of a full scan")
    assert recall >= 0.95, recall
    assert 0 < compared < 0.6 * len(queries) * len(base)  # not a brute-force scan in disguise


def test_ivf_probes_only_nprobe_lists():
    # Unclustered data is IVF's worst case: with 8 of 128 lists probed many true neighbours are
    # missed, and with every list probed the result is exact. Both show that nprobe is honoured.
    base, queries = unit_vectors(5000, dim=32, seed=7), unit_vectors(100, dim=32, seed=8)
    expected = brute_force(base, queries, 5)
    narrow = VectorIndex.build(base, kind="ivf", nprobe=8)
    full = VectorIndex.build(base, kind="ivf", nprobe=10_000)
    recall = {}
    for label, index in (("narrow", narrow), ("full", full)):
        _, found = index.search(queries, 5)
        recall[label] = np.mean([len(set(f) & set(e)) / 5 for f, e in zip(found, expected, strict=True)])
    assert narrow.params["nlist"] == 128
    assert recall["full"] == 1.0
    assert 0.3 < recall["narrow"] < 0.9, recall


def test_fewer_vectors_than_k_and_empty():
    index = VectorIndex(dim=8)
    scores, ids = index.search(np.ones(8, np.float32), 3)
    assert ids.tolist() == [[-1, -1, -1]] and np.isneginf(scores).all()
    index.add(unit_vectors(2, dim=8), [5, 9])
    scores, ids = index.search(unit_vectors(1, dim=8, seed=5), 3)
    assert sorted(ids[0][:2].tolist()) == [5, 9] and ids[0][2] == -1


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_save_load_round_trip_and_tamper_detection(tmp_path, kind):
    base = unit_vectors(500)
    index = VectorIndex.build(base, np.arange(500) + 1, kind=kind)
    path = tmp_path / "index.faiss"
    index.save(path, meta={"generation": 4})
    loaded, meta = VectorIndex.load(path)
    assert meta == {"generation": 4} and loaded.kind == kind and len(loaded) == 500
    assert sorted(loaded.ids().tolist()) == list(range(1, 501))
    assert np.array_equal(loaded.search(base[:5], 3)[1], index.search(base[:5], 3)[1])
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum"):
        VectorIndex.load(path)
    path.write_bytes(data[:100])
    with pytest.raises(IndexFileError):
        VectorIndex.load(path)
    with pytest.raises(IndexFileError, match="not found"):
        VectorIndex.load(tmp_path / "missing")


def test_remove_ids():
    base = unit_vectors(100)
    index = VectorIndex.build(base, np.arange(100))
    assert index.remove([3, 4]) == 2 and len(index) == 98
    _, ids = index.search(base[3], 1)
    assert ids[0][0] != 3


def test_large_exact_search_prefilters_in_float16_and_stays_exact(monkeypatch):
    from castkeep.identity import index as index_module

    rng = np.random.default_rng(3)
    database = rng.standard_normal((6000, 64)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries = database[:8] + 0.5 * rng.standard_normal((8, 64)).astype(np.float32)
    ids = np.arange(6000) * 7 + 1
    reference = VectorIndex.build(database, ids)          # below the threshold: plain float32 scan
    expected_scores, expected_ids = reference.search(queries, 10)
    monkeypatch.setattr(index_module, "PREFILTER_MIN", 1000)
    prefiltered = VectorIndex.build(database, ids)
    scores, found = prefiltered.search(queries, 10)
    assert prefiltered._prefilter is not None              # the float16 path really ran
    assert prefiltered.prefilter_counts == {"proven": 8, "rescanned": 0}  # every row proven exact
    assert np.array_equal(found, expected_ids)
    assert np.allclose(scores, expected_scores, atol=1e-6)
    # Without a proof (an error bound too large to certify), every row falls back to float32.
    monkeypatch.setattr(index_module, "FP16_ERROR", 10.0)
    scores, found = prefiltered.search(queries, 10)
    assert prefiltered.prefilter_counts == {"proven": 8, "rescanned": 8}
    assert np.array_equal(found, expected_ids)
    assert np.allclose(scores, expected_scores, atol=1e-6)
    # Adding vectors invalidates the float16 copy.
    prefiltered.add(database[:1], [99999])
    assert prefiltered._prefilter is None


def test_index_dimension_comes_from_the_first_vectors():
    index = VectorIndex(kind="exact")
    assert index.dim is None and len(index) == 0
    assert index.search(np.ones(3, np.float32), 2)[1].tolist() == [[-1, -1]]
    restored, _ = VectorIndex.from_bytes(index.to_bytes())   # an empty index round-trips
    restored.add(unit_vectors(4, dim=24), [1, 2, 3, 4])
    assert restored.dim == 24
    with pytest.raises(ValueError, match="dimension 24"):
        restored.add(unit_vectors(1, dim=512), [5])


@pytest.mark.subprocess
def test_faiss_settings_are_applied_by_the_first_index_not_at_import():
    script = textwrap.dedent("""
        import faiss
        faiss.cvar.distance_compute_blas_threshold = 12345   # another library's choice
        faiss.omp_set_num_threads(2)
        import castkeep.identity.index as index_module
        print(faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads())
        index_module.VectorIndex(kind="exact")
        print(faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads())
    """)
    env = {**os.environ, "CASTKEEP_FAISS_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    after_import, after_index = done.stdout.split("\n")[:2]
    assert after_import == "12345 2"
    assert after_index == "20 1"
