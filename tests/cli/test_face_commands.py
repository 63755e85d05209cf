"""`castkeep analyze / compare / doctor` as a user runs them (subprocesses, real models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def portrait(faces_dir):
    return faces_dir / "deepface_celebs" / "angelina_jolie" / "img1.jpg"


def _one_line_error(result, *needles):
    assert result.returncode not in (0, 1), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_analyze_json_and_drawing(cli, faces_dir, tmp_path):
    drawing = tmp_path / "drawn.png"
    result = cli("analyze", str(faces_dir / "groups" / "bbt3.jpg"), "--json", "--draw", str(drawing))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["faces"]) == 5
    face = data["faces"][0]
    assert face["dense_landmarks"] == 478 and face["landmarks_106"] == 106
    assert set(face["pose"]) >= {"yaw", "pitch", "roll"} and "usable" in face["quality"]
    with Image.open(drawing) as image:
        assert image.size == (data["width"], data["height"])
        original = np.asarray(Image.open(faces_dir / "groups" / "bbt3.jpg").convert("RGB"), np.int16)
        assert np.abs(np.asarray(image.convert("RGB"), np.int16) - original).sum() > 0


def test_compare_json(cli, faces_dir, portrait):
    same = cli("compare", str(portrait), str(faces_dir / "deepface_celebs" / "angelina_jolie" / "img2.jpg"), "--json")
    other = cli("compare", str(portrait), str(faces_dir / "deepface_celebs" / "mark_zuckerberg" / "img13.jpg"), "--json")
    assert same.returncode == 0 and other.returncode == 0, same.stderr + other.stderr
    same_data, other_data = json.loads(same.stdout), json.loads(other.stdout)
    assert same_data["same"] is True and other_data["same"] is False
    assert same_data["similarity"] > other_data["similarity"]
    assert same_data["providers"] == ["CPUExecutionProvider"]


def test_compare_text_and_face_choice(cli, faces_dir, portrait):
    group = str(faces_dir / "groups" / "fr_two_people.jpg")
    result = cli("compare", group, group, "--face-b", "1")
    assert result.returncode == 0 and "different people" in result.stdout
    out_of_range = cli("compare", group, str(portrait), "--face-a", "5")
    _one_line_error(out_of_range, "fr_two_people.jpg", "out of range")


def test_doctor_tells_the_truth_on_a_cpu_machine(cli):
    result = cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    import onnxruntime

    assert data["onnxruntime_providers"]["available"] == onnxruntime.get_available_providers()
    assert data["onnxruntime_providers"]["cuda_usable"] is False
    assert data["model_pack"]["session_providers"] == ["CPUExecutionProvider"]
    assert "non-commercial" in data["model_pack"]["license"] or "terms" in data["model_pack"]["license"]
    assert data["face_landmarker"]["sha256_ok"] is True


@pytest.mark.parametrize("kind", ["gray", "rgba", "png16", "cmyk", "exif"])
def test_unusual_formats_are_analysed(cli, portrait, tmp_path, kind):
    source = Image.open(portrait).convert("RGB")
    target = tmp_path / f"{kind}.png"
    if kind == "gray":
        source.convert("L").save(target)
    elif kind == "rgba":
        source.convert("RGBA").save(target)
    elif kind == "png16":
        Image.fromarray(np.asarray(source.convert("L"), np.uint16) * 257).save(target)
    elif kind == "cmyk":
        target = tmp_path / "cmyk.jpg"
        source.convert("CMYK").save(target)
    elif kind == "exif":
        target = tmp_path / "exif.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6
        source.transpose(Image.Transpose.ROTATE_90).save(target, exif=exif)
    result = cli("analyze", str(target), "--json", "--no-dense")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["faces"]) == 1


@pytest.mark.parametrize("kind, needle, code", [
    ("missing", "file not found", 3),
    ("empty", "empty", 3),
    ("truncated", "truncated", 3),
    ("text", "not an image", 3),
    ("bomb", "too large", 3),
    ("noface", "no face", 4),
])
def test_bad_input_is_one_line_and_nonzero(cli, portrait, bad_image, kind, needle, code):
    target = bad_image(kind, portrait)
    for command in (["analyze", str(target)], ["compare", str(target), str(portrait)]):
        result = cli(*command)
        _one_line_error(result, target.name, needle)
        assert result.returncode == code
