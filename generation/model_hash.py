"""sha256 of multi-GB weight files, remembered by (absolute path, size, mtime) so a run does not re-read
a 7 GB checkpoint to write its "Model hash".

A1111's "Model hash" (what Civitai matches a checkpoint by) is its newer "AutoV2" hash: the first 10 hex
digits of the sha256 of the whole checkpoint file (`a1111_short_hash`). For a diffusers folder there is no
such file; castkeep then hashes the UNet weights (which Civitai will not know).

The cache is a small JSON file in the user cache dir (`$CASTKEEP_HASH_CACHE` overrides its path). Files
under CACHE_MIN_BYTES are hashed every time (milliseconds), so only real checkpoints are remembered. A
changed file (size or mtime) is hashed again; a cache that cannot be read or written is only a cost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils import file_sha256, write_json_atomic

HASH_CACHE_ENV = "CASTKEEP_HASH_CACHE"
CACHE_MIN_BYTES = 64 << 20  # 64 MiB: anything smaller hashes in well under a second
CACHE_MAX_ENTRIES = 512


def hash_cache_path() -> Path:
    override = os.environ.get(HASH_CACHE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("castkeep")) / "file-hashes.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of `path`, read once per (absolute path, size, mtime_ns) for files of CACHE_MIN_BYTES or more."""
    real = Path(path).resolve()
    stat = real.stat()
    if stat.st_size < CACHE_MIN_BYTES:
        return file_sha256(real)
    cache_file = hash_cache_path()
    cache = _read_cache(cache_file)
    entry = cache.get(str(real))
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = file_sha256(real)
    cache[str(real)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    if len(cache) > CACHE_MAX_ENTRIES:  # oldest entries first (dicts keep insertion order)
        cache = dict(list(cache.items())[-CACHE_MAX_ENTRIES:])
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_file, cache)
    except OSError:
        pass  # a read-only cache dir costs a re-hash next time, nothing more
    return digest


def a1111_short_hash(sha256: str | None) -> str | None:
    """A1111's "Model hash" (AutoV2): the first 10 hex digits of the file's sha256."""
    return sha256[:10] if sha256 else None
