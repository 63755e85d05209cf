"""A1111's "Model hash" (first 10 hex digits of the checkpoint file's sha256) and the size+mtime cache
that keeps multi-GB checkpoints from being re-read on every run."""

from __future__ import annotations

import hashlib
import os

import pytest

from castkeep.generation import model_hash
from castkeep.generation.model_hash import HASH_CACHE_ENV, a1111_short_hash, cached_sha256

pytestmark = pytest.mark.generation


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Every file below is "large" (cached), the cache lives in tmp_path, and real hashing is counted."""
    calls: list[str] = []
    real = model_hash.file_sha256

    def counting(path, **kwargs):
        calls.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(model_hash, "file_sha256", counting)
    monkeypatch.setattr(model_hash, "CACHE_MIN_BYTES", 0)
    monkeypatch.setenv(HASH_CACHE_ENV, str(tmp_path / "cache" / "hashes.json"))
    return calls


def test_a_checkpoint_is_read_once_until_it_changes(counted, tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"weights" * 1000)
    expected = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert cached_sha256(checkpoint) == expected and len(counted) == 1
    assert cached_sha256(tmp_path / "." / "model.safetensors") == expected  # same absolute path
    assert len(counted) == 1  # the second call did not read the file
    assert a1111_short_hash(expected) == expected[:10] and a1111_short_hash(None) is None
    # New content (size and mtime change): hashed again.
    checkpoint.write_bytes(b"other weights" * 1000)
    assert cached_sha256(checkpoint) == hashlib.sha256(checkpoint.read_bytes()).hexdigest() and len(counted) == 2
    # Same size, new mtime: hashed again too.
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    cached_sha256(checkpoint)
    assert len(counted) == 3


def test_small_files_are_not_cached_and_a_broken_cache_is_only_a_cost(counted, tmp_path, monkeypatch):
    small = tmp_path / "small.bin"
    small.write_bytes(b"x")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "hashes.json").write_text("{not json", encoding="utf-8")
    assert cached_sha256(small) == hashlib.sha256(b"x").hexdigest()  # unreadable cache: rebuilt
    monkeypatch.setattr(model_hash, "CACHE_MIN_BYTES", 1 << 20)
    cached_sha256(small)
    cached_sha256(small)
    assert len(counted) == 3  # below the size threshold every call hashes
