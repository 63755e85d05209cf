"""Reading images from disk into the BGR uint8 arrays insightface and OpenCV expect.

Everything a user may point castkeep at goes through `load_image`, so every bad file becomes one
`ImageError` naming the file and the reason, never a decoder traceback.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

# Larger than any camera or generated image a user would register (a 100 MP photo is 10000x10000);
# smaller than the decompression-bomb sizes an attacker would send. This is the limit (README: 120 MP):
# PIL's own bomb warning (about 89.5 MP) is silenced below it, its bomb error (about 179 MP) lies above it.
MAX_IMAGE_PIXELS = 120_000_000
# A 120 MP image stored uncompressed as 16-bit RGBA is 960 MB; a larger file is refused from its size
# before anything reads it (callers hash the file too).
MAX_IMAGE_FILE_BYTES = 1 << 30

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: grayscale, palette, alpha, 16-bit and CMYK included."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: scale by the real range, not a blind right shift, so both
        # full-range and 12-bit-in-16 files keep their contrast.
        data = np.asarray(image, dtype=np.float64)
        top = 65535.0 if data.max() > 255 else 255.0
        data = np.clip(data / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(data, mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels carry arbitrary colour: composite onto neutral grey.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (127, 127, 127, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def check_image_file(path: Path) -> None:
    """An ImageError saying plainly why `path` cannot be a photo: missing, a symlink loop, a folder that may
    not be entered, a directory, a FIFO or device (read only regular files: a FIFO would block), empty, or
    over MAX_IMAGE_FILE_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        reason = "file not found (a broken symbolic link)" if path.is_symlink() else "file not found"
        raise ImageError(reason, path=path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError("symbolic link loop (the link points back to itself)", path=path) from None
        if exc.errno == errno.EACCES:
            raise ImageError("cannot read file (permission denied on it or a folder above it)", path=path) from None
        if exc.errno == errno.ENOTDIR:
            raise ImageError("file not found (a part of the path is a file, not a folder)", path=path) from None
        raise ImageError(f"cannot read file ({exc.strerror or exc})", path=path) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError("is a directory, not an image", path=path)
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a special file")
        raise ImageError(f"is {kind}, not a regular image file", path=path)
    if info.st_size == 0:
        raise ImageError("file is empty (0 bytes)", path=path)
    if info.st_size > MAX_IMAGE_FILE_BYTES:
        raise ImageError(f"file too large for an image ({info.st_size / 1e9:.1f} GB; limit "
                         f"{MAX_IMAGE_FILE_BYTES / 1e9:.1f} GB)", path=path)


def load_pil(path: str | os.PathLike) -> Image.Image:
    """Open, validate and decode an image file; apply its EXIF orientation; return RGB."""
    path = Path(path)
    check_image_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"image too large ({width}x{height} = {width * height / 1e6:.0f} MP; "
                        f"limit {MAX_IMAGE_PIXELS / 1e6:.0f} MP)",
                        path=path,
                    )
                image.load()
                image = ImageOps.exif_transpose(image) or image
                return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image file (unknown format)", path=path) from None
    except Image.DecompressionBombError:  # PIL refuses before castkeep's check sees the size
        raise ImageError(f"image too large (a decompression bomb; limit {MAX_IMAGE_PIXELS / 1e6:.0f} MP)",
                         path=path) from None
    except PermissionError:
        raise ImageError("cannot read file (permission denied)", path=path) from None
    except OSError as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = "image file is truncated or corrupt"
        raise ImageError(f"cannot decode image ({reason})", path=path) from None
    except (ValueError, SyntaxError, MemoryError) as exc:
        raise ImageError(f"cannot decode image ({exc})", path=path) from None


# EXIF tag 0x0112: how the camera was held. Only upright files (1 or no tag) take the JPEG fast path.
_EXIF_ORIENTATION = 0x0112
_JPEG_END = b"\xff\xd9"


def decode_jpeg(path: Path) -> np.ndarray | None:
    """A baseline 8-bit RGB or grayscale JPEG decoded straight to BGR by OpenCV (about 2x faster than PIL
    plus the RGB->BGR copy, and pixel-identical: both use libjpeg-turbo with the same settings; a test
    checks it on the shared photos). None for anything else — rotated by EXIF, CMYK, over the size limit,
    unreadable, or not ending in the JPEG end marker (a truncated download: OpenCV would fill the missing
    rows with grey where PIL refuses) — which `load_pil` then reads, or rejects with its clear message."""
    import cv2

    try:
        check_image_file(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bomb's warning is for load_pil to turn into its error
            with Image.open(path) as header:  # reads the header only
                if (header.format != "JPEG" or header.mode not in ("RGB", "L")
                        or header.size[0] * header.size[1] > MAX_IMAGE_PIXELS
                        or header.getexif().get(_EXIF_ORIENTATION, 1) != 1):
                    return None
        data = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, ImageError, Image.DecompressionBombError):
        return None
    if data[-2:].tobytes() != _JPEG_END:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)


def load_image(source: ImageInput) -> np.ndarray:
    """Return an HxWx3 BGR uint8 array from a path, a PIL image or an array (assumed BGR)."""
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ImageError(f"array of shape {source.shape} is not an image")
        if array.dtype != np.uint8:
            raise ImageError(f"array dtype {array.dtype} is not uint8")
        return np.ascontiguousarray(array[:, :, :3])
    if isinstance(source, Image.Image):
        rgb = _to_rgb(ImageOps.exif_transpose(source) or source)
    else:
        fast = decode_jpeg(Path(source)) if Path(source).suffix.lower() in (".jpg", ".jpeg", ".jpe", ".jfif") else None
        if fast is not None:
            return fast
        rgb = load_pil(source)
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def describe_source(source: ImageInput) -> str:
    """A short label for an image input, for messages and reports."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape[1]}x{source.shape[0]}>"
    return f"<image {source.size[0]}x{source.size[1]}>"


# PNG text chunks that generators write: castkeep's sidecar, A1111/Forge/Fooocus `parameters`, ComfyUI's
# `prompt`/`workflow`, InvokeAI's metadata.
GENERATOR_CHUNKS = ("castkeep", "parameters", "prompt", "workflow", "invokeai_metadata", "sd-metadata")


def generator_chunk(source: ImageInput) -> str | None:
    """The generator metadata chunk an image file carries (see GENERATOR_CHUNKS), or None: no such chunk,
    not a file, or unreadable (loading it later reports why). Reads the header only."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bomb's warning is for load_pil to turn into its error
            with Image.open(source) as image:
                info = dict(image.info)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return next((key for key in GENERATOR_CHUNKS if key in info), None)
