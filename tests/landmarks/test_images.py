"""load_image: every format a user may hand us, and every broken file, on real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from castkeep.errors import ImageError
from castkeep.landmarks.images import load_image


@pytest.fixture(scope="module")
def photo(faces_dir):
    return faces_dir / "lfw_gallery" / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg"


def test_reads_rgb_jpeg_as_bgr(photo):
    image = load_image(photo)
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    assert image.dtype == np.uint8 and image.shape == rgb.shape
    assert np.array_equal(image[:, :, ::-1], rgb)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_converts_every_mode_to_three_channel_uint8(photo, tmp_path, mode):
    source = Image.open(photo).convert("RGB")
    if mode == "I;16":
        data = (np.asarray(source.convert("L"), dtype=np.uint16) * 257)
        converted = Image.fromarray(data)
        assert converted.mode.startswith("I;16")
        target = tmp_path / "deep.png"
    elif mode == "CMYK":
        converted, target = source.convert("CMYK"), tmp_path / "cmyk.jpg"
    else:
        converted, target = source.convert(mode), tmp_path / f"{mode}.png"
    converted.save(target)
    image = load_image(target)
    assert image.shape == (source.height, source.width, 3) and image.dtype == np.uint8
    gray_original = np.asarray(source.convert("L"), dtype=np.float32)
    gray_loaded = image.astype(np.float32).mean(axis=2)
    # Content survives the conversion (not a black or inverted image).
    assert np.corrcoef(gray_original.ravel(), gray_loaded.ravel())[0, 1] > 0.9


def test_applies_exif_orientation(photo, tmp_path):
    source = Image.open(photo).convert("RGB").crop((0, 0, 250, 200))  # not square
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    target = tmp_path / "rotated.jpg"
    source.transpose(Image.Transpose.ROTATE_90).save(target, exif=exif, quality=95)
    image = load_image(target)
    assert image.shape[:2] == (200, 250)


@pytest.mark.parametrize("kind, message", [
    ("missing", "file not found"),
    ("empty", "empty"),
    ("truncated", "truncated"),
    ("text", "not an image"),
    ("directory", "directory"),
])
def test_bad_files_raise_one_line_errors(photo, bad_image, kind, message):
    target = bad_image(kind, photo)
    with pytest.raises(ImageError) as info:
        load_image(target)
    text = str(info.value)
    assert message in text and str(target) in text and "\n" not in text


def test_decompression_bomb_is_refused_before_decoding(photo, bad_image):
    target = bad_image("bomb", photo)
    assert target.stat().st_size < 2_000_000
    with pytest.raises(ImageError, match="too large"):
        load_image(target)


def png_header(path, width: int, height: int):
    """A PNG of that size whose pixel data is not zlib: PIL reads the size, decoding fails at once."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"not zlib data"))
    return path


@pytest.mark.parametrize("width, height, refused", [
    (10000, 9000, False), (12000, 10000, False),   # 90 MP (over PIL's bomb warning), exactly 120 MP
    (12001, 10000, True), (15000, 12000, True),     # just over the limit; over PIL's bomb error (179 MP)
])
def test_the_pixel_limit_is_the_documented_one(tmp_path, width, height, refused):
    """Issue 13 item 14: the limit is 120 MP, as the README says, not PIL's 89.5 MP warning."""
    with pytest.raises(ImageError) as info:
        load_image(png_header(tmp_path / "header.png", width, height))
    reason = str(info.value)
    assert ("limit 120 MP" in reason) is refused and ("cannot decode" in reason) is not refused, reason


def test_a_100_megapixel_photo_loads(tmp_path):
    from PIL import Image

    target = tmp_path / "big.png"
    Image.new("L", (10000, 10000), 128).save(target)  # 120 kB on disk, 300 MB decoded as BGR
    array = load_image(target)
    assert array.shape == (10000, 10000, 3) and array[5000, 5000].tolist() == [128, 128, 128]
