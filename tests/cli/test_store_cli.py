"""The store commands as a user runs them: `python -m castkeep ...` in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def photos(faces_dir: Path, index: int) -> list[Path]:
    folder = sorted(p for p in (faces_dir / "lfw_gallery").iterdir() if p.is_dir())[index]
    return sorted(folder.glob("*.jpg"))


def assert_one_line_error(result, code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_store_commands_end_to_end(tmp_path, faces_dir, cli):
    store = str(tmp_path / "store")
    mara, other = photos(faces_dir, 10), photos(faces_dir, 11)

    result = cli("register", "Mara Ç", *map(str, mara[:3]), "--description", "lead", "--tag", "cast",
                 "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    registered = json.loads(result.stdout)
    assert registered["name"] == "Mara Ç" and registered["references"] == 3
    assert registered["tags"] == ["cast"] and registered["baseline"]["mean"] > 0.3
    assert set(registered["pose_coverage"]["bins"]) >= {"frontal", "left", "right"}

    # the second character arrives through export → import of a store built with the same pack
    result = cli("register", "Other", *map(str, other[:3]), "--store", str(tmp_path / "second"))
    assert result.returncode == 0, result.stderr
    result = cli("export", "other", str(tmp_path), "--store", str(tmp_path / "second"), "--json")
    exported = json.loads(result.stdout)["file"]
    result = cli("import", exported, "--store", store)
    assert result.returncode == 0 and "imported Other" in result.stdout, result.stderr

    listed = json.loads(cli("list", "--store", store, "--json").stdout)
    assert [c["name"] for c in listed] == ["Mara Ç", "Other"]
    shown = json.loads(cli("show", "mara ç", "--store", store, "--json").stdout)
    assert len(shown["reference_details"]) == 3 and shown["pose_coverage"]["covered"]
    assert "pose coverage" in cli("show", "Mara Ç", "--store", store).stdout

    result = cli("identify", str(mara[4]), "--store", store, "--json")
    matches = json.loads(result.stdout)
    assert [m["name"] for m in matches] == ["Mara Ç", "Other"]
    assert matches[0]["score"] > matches[1]["score"] and matches[0]["same"]

    result = cli("score", str(mara[4]), "--character", "Other", "--store", store, "--json")
    scored = json.loads(result.stdout)
    assert not scored["same"] and scored["leakage"] and scored["closest_other"]["name"] == "Mara Ç"
    assert 0 <= scored["probability"] < 0.5

    verified = json.loads(cli("verify", "--store", store, "--json").stdout)
    assert verified["ok"] and verified["characters"] == 2

    assert cli("remove", "Other", "--store", store).returncode == 0
    assert [c["name"] for c in json.loads(cli("list", "--store", store, "--json").stdout)] == ["Mara Ç"]


def test_store_errors_are_one_line_and_lose_nothing(tmp_path, faces_dir, cli):
    from PIL import Image

    store = str(tmp_path / "store")
    mara = photos(faces_dir, 12)
    assert cli("register", "Kept", *map(str, mara[:2]), "--store", store).returncode == 0
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((240, 240, 3), 90, np.uint8)).save(blank)

    assert_one_line_error(cli("show", "Nobody", "--store", store), 8)
    assert_one_line_error(cli("score", str(mara[3]), "--character", "Nobody", "--store", store), 8)
    assert_one_line_error(cli("register", "../escape", str(mara[3]), "--store", store), 9)
    assert_one_line_error(cli("register", "kept", str(mara[3]), "--store", store), 10)
    result = cli("register", "Faceless", str(blank), "--store", store)
    assert_one_line_error(result, 4)
    assert "blank.png" in result.stderr
    assert_one_line_error(cli("import", str(blank), "--store", store), 7)
    assert_one_line_error(cli("list", "--store", str(blank)), 7)

    # a garbage index file is a cache: rebuilt, nothing lost
    (Path(store) / "index.faiss").write_bytes(b"garbage")
    result = cli("identify", str(mara[3]), "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["name"] == "Kept"
    assert [c["name"] for c in json.loads(cli("list", "--store", store, "--json").stdout)] == ["Kept"]

    # a smashed database is reported, not traced back
    (Path(store) / "castkeep.sqlite3").write_bytes(b"not a database at all" * 100)
    assert_one_line_error(cli("list", "--store", store), 7)
