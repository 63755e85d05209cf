"""--token-reads: every request under /api needs the token (as the bearer header, or the session cookie the page
gets for it), refused before its body is read; the page, its files and the API documentation stay open; the
cookie never stands in for the header on a change."""

from __future__ import annotations

import pytest
from serve_helpers import MARA, make_client, photo_files

from castkeep.errors import ConfigError
from castkeep.serve import ServeConfig

TOKEN = "a studio secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.slow  # loads the face models


def test_every_api_request_needs_the_token_the_page_and_docs_stay_open(tmp_path):
    with make_client(tmp_path / "store", workers=1, token=TOKEN, token_reads=True) as client:
        client.base_url = "http://studio.example"
        assert client.post("/api/characters", data={"name": "Mara"}, files=photo_files(MARA[:2]), headers=AUTH).status_code == 201
        crop = client.get("/api/characters/Mara", headers=AUTH).json()["reference_details"][0]["crop_url"]
        probe = {"image": ("probe.jpg", MARA[3].read_bytes(), "image/jpeg")}
        for method, path in (("GET", "/api/status"), ("GET", "/api/characters"), ("GET", "/api/characters/Mara"),
                             ("GET", crop), ("GET", "/api/characters/Mara/export"), ("GET", "/api/jobs"),
                             ("GET", "/api/runs"), ("GET", "/api/runs/x/files/job.json"), ("GET", "/api/nothing"),
                             ("POST", "/api/identify")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"castkeep_session={TOKEN}"}):
                answer = client.request(method, path, headers=headers, files=probe if method == "POST" else None)
                assert answer.status_code == 401, (path, headers, answer.text)
                assert answer.json()["error"]["type"] == "AuthenticationError" and answer.headers["www-authenticate"] == "Bearer"
        # Refused from its headers, before its body is read.
        big = client.post("/api/identify", content=b"x" * 2**20, headers={"Content-Type": "application/octet-stream"})
        assert big.status_code == 401
        for path in ("/", "/static/app.js", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        status = client.get("/api/status", headers=AUTH).json()
        assert status["reads_need_token"] is True and status["writes_need_token"] is True
        assert client.post("/api/identify", files=probe, headers=AUTH).json()["matches"][0]["name"] == "Mara"


def test_the_page_signs_in_once_for_a_session_cookie_that_only_reads(tmp_path):
    with make_client(tmp_path / "store", workers=1, token=TOKEN, token_reads=True) as client:
        assert client.post("/api/characters", data={"name": "Mara"}, files=photo_files(MARA[:2]), headers=AUTH).status_code == 201
        wrong = client.post("/api/session", data={"token": "guess"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "AuthenticationError"
        assert "set-cookie" not in wrong.headers
        signed = client.post("/api/session", data={"token": TOKEN})
        assert signed.status_code == 200, signed.text
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN.lower() not in cookie
        # The client's cookie jar now holds it: images, run files and reads load without a header...
        character = client.get("/api/characters/Mara")
        assert character.status_code == 200
        crop = client.get(character.json()["reference_details"][0]["crop_url"])
        assert crop.status_code == 200 and crop.content.startswith(b"\x89PNG")
        # ... and it changes nothing: a change still needs the header (another site cannot ride on the cookie).
        assert client.delete("/api/characters/Mara").status_code == 401
        assert client.delete("/api/characters/Mara", headers=AUTH).status_code == 200


def test_token_reads_needs_a_token(invoke, tmp_path):
    with pytest.raises(ConfigError, match="needs a token"):
        ServeConfig(token_reads=True)
    result = invoke("serve", "--token-reads", "--store", str(tmp_path / "store"), env={"CASTKEEP_TOKEN": None})
    assert result.returncode == 2 and "--token-reads needs a token" in result.stderr
    assert not (tmp_path / "store").exists()
