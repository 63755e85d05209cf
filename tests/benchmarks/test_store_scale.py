"""`castkeep bench store` at 1e3 vectors: schema and recall sanity (speed is reported, not asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from castkeep.benchmarks.store_scale import make_queries, numpy_search, parse_sizes, unit_vectors
from castkeep.errors import BenchmarkInputError


def test_store_cli_small(invoke, tmp_path):
    result = invoke("bench", "store", "--sizes", "1e3", "--queries", "20", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (row,) = data["sizes"]
    assert row["size"] == 1000 and row["k"] == 10
    assert set(row["indexes"]) == {"exact", "hnsw", "ivf"}
    assert row["indexes"]["exact"]["recall_at_10"] == 1.0
    for kind, stats in row["indexes"].items():
        assert stats["nearest_in_top_10"] >= 0.9, kind
        assert 0.0 < stats["recall_at_10"] <= 1.0
        assert stats["speedup_p50_vs_numpy"] > 0 and stats["build_s"] >= 0
    assert row["numpy"]["memory_bytes"] == 1000 * 512 * 4
    assert (tmp_path / "store-scale.json").is_file()


def test_numpy_baseline_is_exact():
    rng = np.random.default_rng(3)
    db = unit_vectors(500, rng)
    queries = make_queries(db, 5, rng)
    scores, ids = numpy_search(db, queries, 10)
    full = np.argsort(-(queries @ db.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, full)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # Queries sit at cosine ~0.7 from their source vector, far above random pairs (~0 in 512-d).
    assert np.all(scores[:, 0] > 0.6)


@pytest.mark.parametrize("text", ["", "abc", "0", "1.5", "1e9"])
def test_bad_sizes(text):
    with pytest.raises(BenchmarkInputError):
        parse_sizes(text)


def test_parse_sizes():
    assert parse_sizes("1e4, 100000,1e6") == [10_000, 100_000, 1_000_000]


def test_queries_match_the_database_dtype():
    rng = np.random.default_rng(0)
    db = unit_vectors(100, rng)
    assert db.dtype == make_queries(db, 3, rng).dtype == np.float32
