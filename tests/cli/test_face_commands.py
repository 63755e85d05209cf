"""`castkeep analyze / compare / doctor` on real models: in-process through the console entry point
(`invoke`), and as a user runs them in a real process (`cli`, marked subprocess) where only a process
shows it: native log lines on stderr."""

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


def test_analyze_json_and_drawing_in_a_real_process(cli, faces_dir, tmp_path):
    drawing = tmp_path / "drawn.png"
    # A user's environment: without the log-level variables this test session sets for itself.
    result = cli("analyze", str(faces_dir / "groups" / "bbt3.jpg"), "--json", "--draw", str(drawing),
                 env={"GLOG_minloglevel": None, "TF_CPP_MIN_LOG_LEVEL": None, "ORT_LOGGING_LEVEL": None})
    assert result.returncode == 0, result.stderr
    # Nothing but the JSON: no progress bar, warning or native (MediaPipe/TFLite, onnxruntime) log line,
    # which C++ writes straight to fd 2 where only a real process shows it.
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert len(data["faces"]) == 5
    face = data["faces"][0]
    assert face["dense_landmarks"] == 478 and face["landmarks_106"] == 106
    assert set(face["pose"]) >= {"yaw", "pitch", "roll"} and "usable" in face["quality"]
    with Image.open(drawing) as image:
        assert image.size == (data["width"], data["height"])
        original = np.asarray(Image.open(faces_dir / "groups" / "bbt3.jpg").convert("RGB"), np.int16)
        assert np.abs(np.asarray(image.convert("RGB"), np.int16) - original).sum() > 0


def test_bad_input_in_a_real_process_is_one_line(cli, portrait, bad_image):
    target = bad_image("noface", portrait)
    result = cli("analyze", str(target))
    _one_line_error(result, target.name, "no face")
    assert result.returncode == 4


def test_compare_json(invoke, faces_dir, portrait):
    same = invoke("compare", str(portrait), str(faces_dir / "deepface_celebs" / "angelina_jolie" / "img2.jpg"),
                  "--json")
    other = invoke("compare", str(portrait), str(faces_dir / "deepface_celebs" / "mark_zuckerberg" / "img13.jpg"),
                   "--json")
    assert same.returncode == 0 and other.returncode == 0, same.stderr + other.stderr
    same_data, other_data = json.loads(same.stdout), json.loads(other.stdout)
    assert same_data["same"] is True and other_data["same"] is False
    assert same_data["similarity"] > other_data["similarity"]
    assert same_data["providers"] == ["CPUExecutionProvider"]


def test_compare_text_and_face_choice(invoke, faces_dir, portrait):
    group = str(faces_dir / "groups" / "fr_two_people.jpg")
    result = invoke("compare", group, group, "--face-b", "1")
    assert result.returncode == 0 and "different people" in result.stdout
    out_of_range = invoke("compare", group, str(portrait), "--face-a", "5")
    _one_line_error(out_of_range, "fr_two_people.jpg", "out of range")
    assert out_of_range.returncode == 5


def _onnxruntime_runs_on_cuda(model_file) -> bool:
    """onnxruntime-gpu lists CUDA even on a machine without a GPU: only a session tells."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False
    session = onnxruntime.InferenceSession(str(model_file), providers=["CUDAExecutionProvider"])
    return session.get_providers()[0] == "CUDAExecutionProvider"


def test_doctor_tells_the_truth_on_a_cpu_machine(invoke, model_pack):
    import onnxruntime

    if _onnxruntime_runs_on_cuda(model_pack.model_file("recognition")):
        pytest.skip("onnxruntime runs on CUDA here: doctor's CPU-machine answers do not apply")
    result = invoke("doctor", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["onnxruntime_providers"]["available"] == onnxruntime.get_available_providers()
    assert data["onnxruntime_providers"]["cuda_usable"] is False
    assert data["model_pack"]["session_providers"] == ["CPUExecutionProvider"]
    assert data["model_pack"]["runs_on"] == {"detection": ["CPUExecutionProvider"],
                                             "recognition": ["CPUExecutionProvider"]}
    assert data["onnxruntime_providers"]["session"]["spinning"] is False
    assert data["dlib"]["backend"] == "onnx" and data["dlib"]["runs_on"] == ["CPUExecutionProvider"]
    # buffalo_s_lite is no InsightFace release name: its terms are the source's, and doctor says so.
    assert "check its source's terms" in data["model_pack"]["license"]
    assert data["face_landmarker"]["sha256_ok"] is True
    text = invoke("doctor")
    assert text.returncode == 0 and "CUDA for face models: no (CPU only)" in text.stdout
    assert "dlib scorer: onnx backend, runs on CPUExecutionProvider" in text.stdout
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        # --device cuda without onnxruntime-gpu: doctor says why, it does not quietly report the CPU.
        asked = json.loads(invoke("doctor", "--device", "cuda", "--json").stdout)
        assert "CUDA was requested" in asked["model_pack"]["error"]


@pytest.mark.parametrize("kind", ["gray", "rgba", "png16", "cmyk", "exif"])
def test_unusual_formats_are_analysed(invoke, portrait, tmp_path, kind):
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
    result = invoke("analyze", str(target), "--json", "--no-dense")
    assert result.returncode == 0, result.stderr
    (face,) = json.loads(result.stdout)["faces"]
    # The face is found upright (EXIF rotation applied): from the eyes' midpoint the mouth lies
    # straight down in the reported keypoints, not sideways.
    kps = np.asarray(face["kps"])
    dx, dy = kps[3:].mean(axis=0) - kps[:2].mean(axis=0)
    assert dy > 2 * abs(dx), kps


@pytest.mark.parametrize("kind, needle, code", [
    ("missing", "file not found", 3),
    ("empty", "empty", 3),
    ("truncated", "truncated", 3),
    ("text", "not an image", 3),
    ("bomb", "too large", 3),
    ("noface", "no face", 4),
])
def test_bad_input_is_one_line_and_nonzero(invoke, portrait, bad_image, kind, needle, code):
    target = bad_image(kind, portrait)
    for command in (["analyze", str(target)], ["compare", str(target), str(portrait)]):
        result = invoke(*command)
        _one_line_error(result, target.name, needle)
        assert result.returncode == code


def test_domain_auto_reads_generator_metadata(invoke, faces_dir, pack_dir, tmp_path):
    """A PNG carrying a generator's chunk (A1111 `parameters`, castkeep's sidecar, ComfyUI's `prompt`) is
    judged with the generated-image calibration; a plain photo with the photo one; --domain wins."""
    from PIL.PngImagePlugin import PngInfo

    photos = sorted((faces_dir / "lfw_gallery" / "Adrien_Brody").glob("*.jpg"))
    metadata = PngInfo()
    metadata.add_text("parameters", "portrait of a man\nSteps: 30, Sampler: DPM++ 2M, Seed: 1")
    rendered, plain = tmp_path / "render.png", tmp_path / "plain.png"
    Image.open(photos[1]).save(rendered, pnginfo=metadata)
    Image.open(photos[1]).save(plain)

    def domain(*args: str) -> str:
        result = invoke("compare", str(photos[0]), *args, "--models", str(pack_dir), "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["domain"]

    assert domain(str(rendered)) == "generated" and domain(str(plain)) == "photo"
    assert domain(str(rendered), "--domain", "photo") == "photo"
