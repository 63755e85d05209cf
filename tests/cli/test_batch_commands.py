"""`score`, `identify` and `analyze` over many files or a folder: one batch, the same answers as one image at a
time, and an unreadable image reported (with --keep-going) or stopping the batch (without)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from castkeep.errors import ImageError


@pytest.fixture(scope="module")
def batch(tmp_path_factory, faces_dir: Path) -> dict[str, Path]:
    """A store with Ari (2 photos) and Bill (1), and a folder of 4 more of their photos plus a corrupt file."""
    from castkeep.cli.main import main  # registering in-process: no second interpreter start

    root = tmp_path_factory.mktemp("batch")
    store, folder = root / "store", root / "photos"
    (folder / "nested").mkdir(parents=True)
    ari = sorted((faces_dir / "lfw_gallery" / "Ari_Fleischer").glob("*.jpg"))
    bill = sorted((faces_dir / "lfw_gallery" / "Bill_Gates").glob("*.jpg"))
    for args in (["register", "Ari", str(ari[0]), str(ari[1])], ["register", "Bill", str(bill[0])]):
        with pytest.raises(SystemExit) as done:
            main([*args, "--store", str(store)])
        assert done.value.code in (0, None)
    for photo in (ari[2], ari[3], bill[1]):
        shutil.copy(photo, folder)
    shutil.copy(bill[2], folder / "nested")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / ".hidden.jpg").write_bytes(b"hidden files are skipped")
    return {"store": store, "folder": folder}


def test_score_a_folder_gives_what_each_photo_gives_alone(batch, invoke):
    store, folder = str(batch["store"]), batch["folder"]
    result = invoke("score", str(folder), "-c", "Ari", "--scorer", "fused", "--keep-going", "--store", store, "--json")
    assert result.returncode == 4, result.stderr  # one unreadable photo: reported, the rest scored
    rows = {Path(row["image"]).name: row for row in json.loads(result.stdout)["images"]}
    assert sorted(rows) == ["Ari_Fleischer_0003.jpg", "Ari_Fleischer_0004.jpg", "Bill_Gates_0002.jpg",
                            "Bill_Gates_0003.jpg", "broken.jpg"]
    assert "not an image" in rows["broken.jpg"]["error"]
    for name, row in rows.items():
        if name == "broken.jpg":
            continue
        alone = json.loads(invoke("score", row["image"], "-c", "Ari", "--scorer", "fused", "--store", store,
                                  "--json").stdout)
        assert row["cosine"] == pytest.approx(alone["cosine"], abs=1e-6)
        assert row["probability"] == pytest.approx(alone["probability"], abs=1e-6)
        assert row["same"] == alone["same"] == name.startswith("Ari")
        assert row["scores"]["dlib"]["score"] == pytest.approx(alone["scores"]["dlib"]["score"], abs=1e-6)
        assert row["leakage"] == (not name.startswith("Ari"))


def test_without_keep_going_a_bad_photo_stops_the_batch_with_its_error(batch, invoke):
    result = invoke("score", str(batch["folder"]), "-c", "Ari", "--store", str(batch["store"]))
    assert result.returncode == ImageError.exit_code
    assert result.stderr.count("\n") == 1 and "broken.jpg" in result.stderr


def test_identify_several_photos(batch, invoke):
    folder = batch["folder"]
    photos = [str(folder / "Bill_Gates_0002.jpg"), str(folder / "Ari_Fleischer_0003.jpg")]
    result = invoke("identify", *photos, "--store", str(batch["store"]), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["images"]
    assert [row["image"] for row in rows] == photos
    assert [row["matches"][0]["name"] for row in rows] == ["Bill", "Ari"]
    assert all(row["matches"][0]["same"] and row["domain"] == "photo" for row in rows)
    text = invoke("identify", *photos, "--store", str(batch["store"])).stdout.splitlines()
    assert text[0].startswith(photos[0] + ": Bill (P(same)") and text[1].startswith(photos[1] + ": Ari")


def test_one_photo_answers_as_before(batch, invoke):
    """A single image keeps the single-image output: a list of matches, not {"images": ...}."""
    photo = str(batch["folder"] / "Bill_Gates_0002.jpg")
    matches = json.loads(invoke("identify", photo, "--store", str(batch["store"]), "--json").stdout)
    assert isinstance(matches, list) and matches[0]["name"] == "Bill"


def test_an_empty_folder_is_a_one_line_image_error(tmp_path, batch, invoke):
    (tmp_path / "empty").mkdir()
    for command in (["score", str(tmp_path / "empty"), "-c", "Ari"], ["identify", str(tmp_path / "empty")]):
        result = invoke(*command, "--store", str(batch["store"]))
        assert result.returncode == ImageError.exit_code and "holds no images" in result.stderr


def test_analyze_a_folder(batch, invoke):
    result = invoke("analyze", str(batch["folder"]), "--no-dense", "--keep-going", "--json")
    images = json.loads(result.stdout)["images"]
    assert len(images) == 5 and sum("error" in image for image in images) == 1
    assert all(image["faces"] for image in images if "error" not in image)
