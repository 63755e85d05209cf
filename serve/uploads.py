"""Uploaded files, checked before any model sees them, and where their bytes wait meanwhile.

An upload is copied into the server's own spool folder under a random name (the client's file name is only
ever a label: a name with a path in it is refused), counted against the size limit as it streams, and
sniffed from its first bytes (never its file name or content type). An image's header is then read for its
size, so a PNG that declares 100,000 x 100,000 pixels is refused before anything decodes it. What passes is
handed to castkeep's own loaders by path, exactly as the CLI hands them a file: same decoders, same answers.
Each request's files are deleted when it ends, and the spool folder when the server stops.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError

from ..errors import ImageError, StoreError
from ..landmarks.images import MAX_IMAGE_PIXELS
from .errors import ApiError

CHUNK = 1 << 20
# Magic bytes of the formats castkeep reads (utils.IMAGE_SUFFIXES), and the suffix the spooled copy gets
# (the loaders take the JPEG fast path by suffix, as they do for the CLI's files).
_MAGIC: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG", ".png"),
    (b"WEBP", 8, "WEBP", ".webp"),      # after b"RIFF" and the chunk size
    (b"BM", 0, "BMP", ".bmp"),
    (b"II*\x00", 0, "TIFF", ".tif"),
    (b"MM\x00*", 0, "TIFF", ".tif"),
)
_PATH_LIKE = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_LABEL = 200


def sniff_image(head: bytes) -> tuple[str, str] | None:
    """(format, suffix) of an image from its first bytes, or None when it is none castkeep reads."""
    for magic, offset, kind, suffix in _MAGIC:
        if head[offset:offset + len(magic)] == magic and (kind != "WEBP" or head.startswith(b"RIFF")):
            return kind, suffix
    return None


def client_label(filename: str | None, fallback: str) -> str:
    """The client's file name as a label for messages and the store's records. A name holding a path (a
    slash or backslash, `..`), or control characters, is refused: browsers send a bare name, so such a
    name is a crafted request."""
    if not filename:
        return fallback
    if _PATH_LIKE.search(filename) or filename in (".", ".."):
        raise ApiError(400, f"file name {filename[:MAX_LABEL]!r} is a path, not a file name: send a bare name",
                       type_name="ImageError", code=ImageError.exit_code)
    return filename[:MAX_LABEL]


@dataclass
class Uploads:
    """One request's spooled files: their paths and the clients' names for them."""

    folder: Path
    limit: int
    labels: dict[str, str] = field(default_factory=dict)  # spooled path -> client's file name

    def _target(self, suffix: str) -> Path:
        return self.folder / f"upload-{secrets.token_hex(8)}{suffix}"

    def _copy(self, source: BinaryIO, target: Path, label: str, head: bytes) -> int:
        """Write `head` and the rest of `source` to `target` (never more than the limit); returns the size."""
        size = len(head)
        with open(target, "xb") as out:
            out.write(head)
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > self.limit:
                    raise ApiError(413, f"{label}: file too large (over {self.limit / 2**20:.0f} MiB)",
                                   type_name="ImageError", code=ImageError.exit_code)
                out.write(chunk)
        return size

    def image(self, upload: Any, fallback: str = "image") -> Path:
        """An uploaded image, checked and spooled; returns its path (`labels` has its client name)."""
        label = client_label(getattr(upload, "filename", None), fallback)
        source: BinaryIO = upload.file
        head = source.read(64)
        if not head:
            raise ApiError(400, f"{label}: file is empty (0 bytes)", type_name="ImageError", code=ImageError.exit_code)
        sniffed = sniff_image(head)
        if sniffed is None:
            raise ApiError(415, f"{label}: not an image castkeep reads (JPEG, PNG, WebP, BMP or TIFF), whatever its "
                           f"name says", type_name="ImageError", code=ImageError.exit_code)
        target = self._target(sniffed[1])
        self.labels[os.fspath(target)] = label
        self._copy(source, target, label, head)
        check_image_header(target, label)
        return target

    def file(self, upload: Any, fallback: str = "file") -> Path:
        """Any uploaded file (a character export), spooled under the size limit; returns its path."""
        label = client_label(getattr(upload, "filename", None), fallback)
        target = self._target(".json")
        self.labels[os.fspath(target)] = label
        self._copy(upload.file, target, label, b"")
        if target.stat().st_size == 0:
            raise ApiError(400, f"{label}: file is empty (0 bytes)", type_name="StoreError", code=StoreError.exit_code)
        return target

    def redact(self, text: str) -> str:
        """`text` with every spooled path (and bare spooled file name) replaced by the client's name."""
        for path, label in self.labels.items():
            text = text.replace(path, label).replace(os.path.basename(path), label)
        return text


def check_image_header(path: Path, label: str) -> None:
    """Refuse an image whose header declares more than castkeep's pixel limit (413), or that no decoder
    recognises (415), from its header alone: a 100,000 x 100,000 PNG is a few hundred bytes on the wire."""
    limit = f"limit {MAX_IMAGE_PIXELS / 1e6:.0f} MP"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise ApiError(413, f"{label}: image too large (its header declares a decompression bomb; {limit})",
                       type_name="ImageError", code=ImageError.exit_code) from None
    except UnidentifiedImageError:
        raise ApiError(415, f"{label}: not an image file (unknown format)", type_name="ImageError",
                       code=ImageError.exit_code) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ApiError(422, f"{label}: cannot read the image header ({exc})", type_name="ImageError",
                       code=ImageError.exit_code) from None
    if width * height > MAX_IMAGE_PIXELS:
        raise ApiError(413, f"{label}: image too large ({width}x{height} = {width * height / 1e6:.0f} MP; {limit})",
                       type_name="ImageError", code=ImageError.exit_code)


class Spool:
    """The server's folder for uploads in flight (private to this process; removed on close)."""

    def __init__(self, limit: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="castkeep-serve-"))
        self.limit = limit

    @contextmanager
    def request(self) -> Iterator[Uploads]:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        try:
            yield Uploads(folder, self.limit)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
