"""Bad uploads: each is one 4xx JSON answer, nothing is written outside the server's spool, and the next good
request is answered as if nothing had happened."""

from __future__ import annotations

import struct
import zlib

import pytest
from serve_helpers import MARA, MAX_UPLOAD

pytestmark = pytest.mark.slow  # the module's app loads the face models


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with one tiny (wrong) data chunk: what a decompression
    bomb or a lying header looks like on the wire (a few dozen bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def jpeg() -> bytes:
    return MARA[3].read_bytes()


BAD_UPLOADS = {
    "zero bytes": (("face.jpg", b""), 400),
    "text": (("face.jpg", b"this is not a picture\n" * 10), 415),
    "html with an image name": (("face.png", b"<html><script>alert(1)</script></html>"), 415),
    "100k x 100k PNG header": (("bomb.png", png_header(100_000, 100_000)), 413),
    "11k x 11k PNG header (121 MP)": (("big.png", png_header(11_000, 11_000)), 413),
    "path traversal in the file name": (("../../x.jpg", jpeg()), 400),
    "absolute path in the file name": (("/etc/passwd", jpeg()), 400),
    "backslash path in the file name": (("..\\..\\x.jpg", jpeg()), 400),
    "truncated JPEG": (("half.jpg", jpeg()[: len(jpeg()) // 2]), 422),
    "JPEG magic, then garbage": (("fake.jpg", b"\xff\xd8\xff" + b"\x00" * 500), 415),
    "over the size limit": (("huge.jpg", b"\xff\xd8\xff" + b"\x00" * (MAX_UPLOAD + 10)), 413),
}


@pytest.mark.parametrize("route", ["/api/identify", "/api/characters"])
@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_a_bad_upload_is_one_4xx_json_error_and_the_server_keeps_serving(client, tmp_path, route, kind):
    (name, content), status = BAD_UPLOADS[kind]
    if route == "/api/identify":
        answer = client.post(route, files={"image": (name, content, "image/jpeg")})
    else:
        answer = client.post(route, data={"name": "Nadia"}, files=[("photos", ("ok.jpg", jpeg(), "image/jpeg")),
                                                                   ("photos", (name, content, "image/jpeg"))])
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"] in ("ImageError", "PayloadTooLarge")
    assert error["code"] == (3 if error["type"] == "ImageError" else 1)
    assert "upload-" not in error["message"] and "castkeep-serve-" not in error["message"]
    assert not (tmp_path.parent.parent / "x.jpg").exists()
    assert [c["name"] for c in client.get("/api/characters").json()] == ["Mara", "Theo"]  # nothing registered
    good = client.post("/api/identify", files={"image": ("probe.jpg", jpeg(), "image/jpeg")})
    assert good.status_code == 200 and good.json()["matches"][0]["name"] == "Mara"


def test_a_streamed_body_over_the_limit_is_cut_off(client):
    """A chunked body (no Content-Length) is counted as it arrives and refused once it passes the limit."""
    boundary = "castkeep-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()

    def body():
        yield head + b"\xff\xd8\xff"
        for _ in range(MAX_UPLOAD // 2**20 + 2):
            yield b"\x00" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    answer = client.post("/api/identify", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413 and answer.json()["error"]["type"] == "PayloadTooLarge"
    assert client.post("/api/identify", files={"image": ("probe.jpg", jpeg(), "image/jpeg")}).status_code == 200


def test_content_decides_not_the_name_or_type(client):
    """A JPEG sent as `notes.txt` with a text content type is read as the JPEG it is."""
    answer = client.post("/api/identify", files={"image": ("notes.txt", jpeg(), "text/plain")})
    assert answer.status_code == 200 and answer.json()["image"] == "notes.txt"
    assert answer.json()["matches"][0]["name"] == "Mara"


def test_uploads_leave_no_file_behind(served):
    client, store = served
    spool = client.app.state.castkeep.spool.root
    client.post("/api/identify", files={"image": ("probe.jpg", jpeg(), "image/jpeg")})
    client.post("/api/identify", files={"image": ("face.jpg", b"", "image/jpeg")})
    assert list(spool.iterdir()) == []
    assert not list(store.glob("upload-*"))
