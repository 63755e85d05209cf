"""The API against a real store and the real models: each answer is the CLI's `--json` answer for the same
files, the character routes, export/import, and the shape of every refusal."""

from __future__ import annotations

import json

import pytest
from serve_helpers import MARA, THEO, photo_files

pytestmark = pytest.mark.slow  # the module's app loads the face models (about 3 s)


def _image(path, field: str = "image"):
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def test_identify_answers_what_the_cli_answers(served, invoke):
    client, store = served
    probe = MARA[4]
    for scorer in ("arcface", "fused"):
        answer = client.post("/api/identify", data={"scorer": scorer}, files=_image(probe))
        assert answer.status_code == 200, answer.text
        data = answer.json()
        cli = invoke("identify", str(probe), "--scorer", scorer, "--store", str(store), "--json")
        assert cli.returncode == 0, cli.stderr
        assert data["matches"] == json.loads(cli.stdout)  # every number, as the CLI prints it
        assert data["image"] == probe.name and data["domain"] == "photo"
        assert [m["name"] for m in data["matches"]] == ["Mara", "Theo"] and data["matches"][0]["same"]


def test_score_and_compare_answer_what_the_cli_answers(served, invoke):
    client, store = served
    probe = THEO[4]
    answer = client.post("/api/score", data={"character": "Theo", "scorer": "fused"}, files=_image(probe))
    assert answer.status_code == 200, answer.text
    cli = json.loads(invoke("score", str(probe), "-c", "Theo", "--scorer", "fused", "--store", str(store), "--json").stdout)
    assert {**answer.json(), "image": None} == {**cli, "image": None}
    assert answer.json()["same"] and not answer.json()["leakage"]

    files = {**_image(MARA[3], "image_a"), **_image(MARA[5], "image_b")}
    answer = client.post("/api/compare", data={"scorer": "fused"}, files=files)
    assert answer.status_code == 200, answer.text
    cli = json.loads(invoke("compare", str(MARA[3]), str(MARA[5]), "--scorer", "fused", "--json").stdout)
    assert {k: v for k, v in answer.json().items() if not k.startswith("image")} == \
        {k: v for k, v in cli.items() if not k.startswith("image")}
    assert answer.json()["image_a"] == MARA[3].name and answer.json()["same"]


def test_registration_through_the_api_stores_what_the_cli_stores(served, invoke, tmp_path):
    client, store = served
    cli = invoke("register", "Mara", *map(str, MARA[:3]), "--tag", "cast", "--store", str(tmp_path / "cli"), "--json")
    assert cli.returncode == 0, cli.stderr
    by_cli = json.loads(cli.stdout)
    by_api = client.get("/api/characters/Mara").json()
    assert by_api["baseline"] == by_cli["baseline"] and by_api["pose_coverage"] == by_cli["pose_coverage"]
    for api_ref, cli_ref in zip(by_api["reference_details"], by_cli["reference_details"], strict=True):
        assert api_ref["sha256"] == cli_ref["sha256"] and api_ref["quality"] == cli_ref["quality"]
        assert api_ref["source_path"] == f"upload:{MARA[by_api['reference_details'].index(api_ref)].name}"


def test_gallery_detail_and_crops(client):
    rows = client.get("/api/characters").json()
    assert [r["name"] for r in rows] == ["Mara", "Theo"] and rows[0]["references"] == 3 and rows[0]["tags"] == ["cast"]
    detail = client.get(rows[0]["url"]).json()
    assert set(detail["pose_coverage"]["bins"]) == {"far left", "left", "frontal", "right", "far right"}
    crop = client.get(detail["reference_details"][0]["crop_url"])
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
    assert crop.content.startswith(b"\x89PNG")
    assert client.get(rows[0]["thumbnail_url"]).status_code == 200
    missing = client.get(f"{rows[0]['url']}/references/999999/crop.png")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFound"


def test_add_references_export_import_remove(client):
    added = client.post("/api/characters/Theo/references", files=photo_files(THEO[3:4]))
    assert added.status_code == 200, added.text
    assert added.json()["references"] == 4
    exported = client.get("/api/characters/Theo/export")
    assert exported.status_code == 200 and "Theo.castkeep.json" in exported.headers["content-disposition"]
    document = exported.json()
    assert document["format"] == "castkeep-character" and len(document["references"]) == 4

    copy = client.post("/api/import", data={"name": "Theo copy"}, files={"file": ("theo.castkeep.json", exported.content)})
    assert copy.status_code == 201, copy.text
    again = client.post("/api/import", files={"file": ("theo.castkeep.json", exported.content)})
    assert again.status_code == 409 and again.json()["error"]["type"] == "DuplicateCharacterError"
    edited = exported.content.replace(b'"Theo"', b'"Teo"', 1)
    damaged = client.post("/api/import", files={"file": ("theo.castkeep.json", edited)})
    assert damaged.status_code == 422 and "checksum" in damaged.json()["error"]["message"]

    assert client.delete("/api/characters/Theo copy").json() == {"removed": "Theo copy"}
    gone = client.delete("/api/characters/Theo copy")
    assert gone.status_code == 404 and gone.json()["error"] == {
        "code": 8, "type": "UnknownCharacterError",
        "message": "no character named 'Theo copy' in this store (see `castkeep list`)"}


@pytest.mark.parametrize("request_args, status, error_type, code", [
    (("post", "/api/characters", {"data": {"name": "Mara"}, "files": photo_files(MARA[3:4])}), 409,
     "DuplicateCharacterError", 10),
    (("post", "/api/characters", {"data": {"name": "../etc"}, "files": photo_files(MARA[3:4])}), 400, "InvalidNameError", 9),
    (("post", "/api/characters", {"data": {"name": "Nadia"}, "files": photo_files([MARA[3], THEO[3]])}), 422,
     "ImpostorReferenceError", 11),
    (("post", "/api/characters", {"data": {"name": "Nadia"}, "files": photo_files(MARA[:1] * 14)}), 400, "StoreError", 7),
    (("post", "/api/score", {"data": {"character": "Nobody"}, "files": _image(MARA[3])}), 404, "UnknownCharacterError", 8),
    (("post", "/api/identify", {"data": {"k": "0"}, "files": _image(MARA[3])}), 422, "RequestValidationError", 2),
    (("post", "/api/identify", {"data": {"scorer": "magic"}, "files": _image(MARA[3])}), 422, "RequestValidationError", 2),
    (("post", "/api/identify", {}), 422, "RequestValidationError", 2),
    (("post", "/api/compare", {"data": {"threshold": "nan"}, "files": {**_image(MARA[3], "image_a"),
                                                                        **_image(MARA[4], "image_b")}}), 400, "ConfigError", 14),
    (("get", "/api/nothing-here", {}), 404, "NotFound", 1),
    (("put", "/api/characters", {}), 405, "MethodNotAllowed", 1),
])
def test_refusals_are_one_json_error(client, request_args, status, error_type, code):
    method, path, kwargs = request_args
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code) and error["message"]
    assert "/tmp" not in error["message"] and "upload-" not in error["message"]  # never the server's own files
    assert [c["name"] for c in client.get("/api/characters").json()] == ["Mara", "Theo"]  # the store is unchanged


def test_no_face_names_the_clients_file(client, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), (90, 140, 200)).save(blank)
    answer = client.post("/api/identify", files={"image": ("sky.png", blank.read_bytes(), "image/png")})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("NoFaceError", 4) and error["message"].startswith("sky.png: ")


def test_status_page_and_docs(client):
    status = client.get("/api/status").json()
    assert status["characters"] == 2 and status["writes_need_token"] is False and status["models"].startswith("buffalo_s_lite")
    assert status["runs_on"]["recognition"] == ["CPUExecutionProvider"]  # where the face models really run
    page = client.get("/")
    assert page.status_code == 200 and "<title>castkeep</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/identify"]["post"]
    assert client.get("/docs").status_code == 200
