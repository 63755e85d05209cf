"""`castkeep bench consistency` on a run folder built from real photos: four of one person, one
impostor, one faceless frame. The impostor must come out as the (only) outlier, and every score must be
what the test computes itself from the same faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.errors import BenchmarkInputError

PERSON = "Alejandro_Toledo"
IMPOSTOR = "Adrien_Brody"


def _png(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        image.convert("RGB").save(target)


@pytest.fixture
def run_dir(faces_dir, tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    photos = sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))
    for i, photo in enumerate(photos[2:6]):  # photos 0-1 are kept for the store's references
        _png(photo, run / f"out_{i:02d}.png")
        (run / f"out_{i:02d}.json").write_text(json.dumps({"character": "toledo", "seed": i}))
    _png(sorted((faces_dir / "lfw_gallery" / IMPOSTOR).glob("*.jpg"))[0], run / "out_04.png")
    Image.new("RGB", (256, 256), (90, 120, 90)).save(run / "out_05.png")  # no face: a failed output
    for i in (4, 5):
        (run / f"out_{i:02d}.json").write_text(json.dumps({"character": "toledo", "seed": i}))
    Image.new("RGB", (64, 64)).save(run / "contact_sheet.png")  # no sidecar: not an output
    (run / "summary.json").write_text(json.dumps({"character": "toledo", "images": 6}))
    return run


def _faces(run: Path, analyzer) -> dict[str, np.ndarray]:
    return {f"out_{i:02d}.png": analyzer.embed(run / f"out_{i:02d}.png").embedding for i in range(5)}


def test_consistency_without_store_uses_the_run_centroid(invoke, run_dir, fast_analyzer, tmp_path):
    result = invoke("bench", "consistency", str(run_dir), "--store", str(tmp_path / "no-store"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["reference"].startswith("run centroid")
    assert data["notes"]  # says why the character named in the run was not used
    assert data["outputs"] == 6 and data["with_face"] == 5
    assert [r["image"] for r in data["no_face"]] == ["out_05.png"]
    assert data["outliers"] == ["out_04.png"]
    # Leave-one-out: each face against the normalised sum of the other four, computed here.
    faces = _faces(run_dir, fast_analyzer)
    total = sum(faces.values())
    for row in data["images"]:
        others = total - faces[row["image"]]
        assert row["score"] == pytest.approx(float(others @ faces[row["image"]]) / np.linalg.norm(others), abs=1e-4)
    # The impostor and the faceless frame both fail; the four photos of one person pass.
    assert data["below_threshold"] == ["out_04.png"] and data["consistency_rate"] == pytest.approx(4 / 6)
    names = list(faces)
    assert data["pairwise"]["labels"] == names
    expected = np.array([[faces[a] @ faces[b] for b in names] for a in names])
    np.testing.assert_allclose(data["pairwise"]["matrix"], expected, atol=1e-4)
    for plot in data["plots"].values():
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(data["result_json"]).parent == run_dir / "consistency"


def test_consistency_against_a_stored_character(invoke, run_dir, faces_dir, fast_analyzer, tmp_path):
    from castkeep.identity.store import Store

    store = tmp_path / "store"
    refs = sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[:2]
    with Store.open(store, analyzer=fast_analyzer, create=True) as opened:
        vector = opened.register("toledo", refs).vector
    result = invoke("bench", "consistency", str(run_dir), "--store", str(store), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["reference"] == "character 'toledo'"
    faces = _faces(run_dir, fast_analyzer)
    scores = {r["image"]: r["score"] for r in data["images"]}
    assert scores == pytest.approx({name: float(face @ vector) / np.linalg.norm(vector)
                                    for name, face in faces.items()}, abs=1e-4)
    assert scores["out_04.png"] < data["threshold"] < min(scores[f"out_{i:02d}.png"] for i in range(4))
    assert data["consistency_rate"] == pytest.approx(4 / 6)
    assert data["below_threshold"] == ["out_04.png"]
    # A re-run does not embed its own plots (they live under RUN_DIR/consistency).
    again = invoke("bench", "consistency", str(run_dir), "--store", str(store), "--json")
    assert json.loads(again.stdout)["outputs"] == 6


def test_unknown_character_is_an_error(invoke, run_dir, tmp_path):
    store = tmp_path / "store"
    result = invoke("bench", "consistency", str(run_dir), "--character", "nobody", "--store", str(store))
    assert result.returncode not in (0, 1, 70) and result.stderr.startswith("error:")
    assert len(result.stderr.splitlines()) == 1


def test_empty_run_dir_is_an_error(invoke, tmp_path):
    result = invoke("bench", "consistency", str(tmp_path))
    assert result.returncode == BenchmarkInputError.exit_code and "no images" in result.stderr


def test_a_generation_run_counts_only_outputs_with_sidecars(tmp_path):
    from castkeep.benchmarks.consistency import run_images

    for name in ("Mara_01_s1.png", "Mara_02_s2.png", "contact_sheet.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    for name in ("Mara_01_s1.json", "Mara_02_s2.json", "summary.json"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in run_images(tmp_path)] == ["Mara_01_s1.png", "Mara_02_s2.png"]
    (tmp_path / "Mara_01_s1.json").unlink()
    (tmp_path / "Mara_02_s2.json").unlink()
    assert len(run_images(tmp_path)) == 3  # plain folders of images: everything counts
