"""Small helpers every layer shares: JSON, atomic file writes, hashing, image suffixes, slugs and
progress bars. This module sits at the bottom of castkeep: it imports nothing from the package
except errors, so landmarks, identity, generation, benchmarks and cli can all use it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# What castkeep reads as a photo when it walks a folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

# Temporary files of atomic writes start with this; `remove_stale_temporaries` knows the pattern.
TMP_PREFIX = ".tmp-"


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any, *, indent: int | None = 2) -> str:
    """JSON text for results and sidecars (numpy values and paths included, Unicode kept)."""
    return json.dumps(data, indent=indent, ensure_ascii=False, default=_json_default)


def _first_bytes(text: str, limit: int) -> str:
    """At most `limit` bytes of `text`, cut at a character boundary (file names are limited in bytes)."""
    return text.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` so that readers see the old file or the new one, never a mix, even if the
    writer is killed or the disk fills up (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{os.getpid()}-{_first_bytes(path.name, 64)}-")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """`dumps(data)` written atomically, with a final newline."""
    return write_bytes_atomic(path, (dumps(data) + "\n").encode("utf-8"))


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries left by atomic writers that were killed (their pid no longer runs)."""
    for tmp in folder.glob(f"{TMP_PREFIX}*"):
        try:
            pid = int(tmp.name[len(TMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                tmp.unlink()
            except OSError:
                pass
        except PermissionError:  # another user's live process
            continue


def file_sha256(path: str | os.PathLike, *, chunk_size: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks (a multi-GB file never sits in memory). A Hugging Face
    cache blob is named by its sha256, so its hash is free."""
    real = Path(path).resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def text_path(path: str | os.PathLike) -> str:
    """A path as valid Unicode text for storing and printing: the bytes of a file name that is not UTF-8
    (which Python carries as lone surrogates, unwritable to SQLite or JSON) become `\\xff` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def slug(text: str, *, max_length: int = 40, fallback: str = "run") -> str:
    """A file-name-safe ASCII form of `text` (letters, digits, `_`, `-`, `.`)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")[:max_length].strip("_.-")
    return cleaned or fallback


# What long-running library functions take to report progress: `progress(items, label=..., total=...)`
# returns the items to loop over (the `progress` below, or `no_progress` when nobody watches).
Progress = Callable[..., Iterable[Any]]


def no_progress(iterable: Iterable[Any], **_: Any) -> Iterable[Any]:
    """The silent Progress: the items, unchanged."""
    return iterable


def progress(iterable: Iterable[Any] | None = None, *, label: str, total: int | None = None,
             enabled: bool = True, unit: str = "img") -> Any:
    """A tqdm bar on stderr for long loops; silent when stderr is not a terminal or when disabled."""
    from tqdm import tqdm

    return tqdm(iterable, desc=label, total=total, disable=not enabled or not sys.stderr.isatty(),
                unit=unit, leave=False)


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601 (every stored or written timestamp)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
