"""dlib's face recognition ResNet on onnxruntime (identity/dlib_onnx.py) against dlib's own network, on
real chips: the stored dlib calibrations were fitted on dlib's numbers, so the two must agree to float32
rounding (measured: 4.5e-7 per component over 258 chips), far inside the 1e-5 asserted here. A wrong pixel
normalisation, padding, pooling or weight layout moves descriptors by 1e-3 or more."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from castkeep.errors import CastkeepError, ModelNotFoundError
from castkeep.identity import dlib_onnx
from castkeep.identity.dlib_recogniser import DESCRIPTOR_MODEL, ENV_BACKEND, SHAPE_MODEL, DlibRecogniser, default_model_dir
from castkeep.landmarks.images import load_image

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def recogniser():
    return DlibRecogniser()  # the default backend: onnx


@pytest.fixture(scope="module")
def dat_bytes() -> bytes:
    return (default_model_dir() / DESCRIPTOR_MODEL).read_bytes()


def _chips(paths, fast_analyzer, recogniser) -> np.ndarray:
    chips = []
    for path in paths:
        image = load_image(path)
        detections = fast_analyzer.detector.detect(image)
        chips += [recogniser.chip(image, detection.bbox) for detection in detections[:2]]
    return np.stack(chips)


def _real_photos(faces_dir: Path, every: int, limit: int) -> list[Path]:
    """Photos (lfw_gallery) and generated images (generated_dev), every `every`-th, `limit` of each."""
    photos = sorted((faces_dir / "lfw_gallery").glob("*/*.jpg"))[::every][:limit]
    generated = sorted((faces_dir / "generated_dev" / "images").glob("*/*.*"))[::every][:limit]
    return photos + generated


def _assert_same_as_dlib(recogniser, chips: np.ndarray) -> None:
    onnx = recogniser.describe_chips(chips)
    reference = np.array([recogniser.model.compute_face_descriptor(chip) for chip in chips])
    assert onnx.shape == (len(chips), 128) and onnx.dtype == np.float32
    gaps = np.linalg.norm(onnx - reference, axis=1)
    assert np.abs(onnx - reference).max() < TOLERANCE and gaps.max() < TOLERANCE, gaps.max()


def test_onnx_descriptors_equal_dlibs_own_network(faces_dir, fast_analyzer, recogniser):
    group = sorted((faces_dir / "groups").iterdir())[0]
    chips = _chips(_real_photos(faces_dir, 131, 3) + [group], fast_analyzer, recogniser)
    assert len(chips) >= 7
    _assert_same_as_dlib(recogniser, chips)


@pytest.mark.slow
def test_onnx_descriptors_equal_dlibs_own_network_on_100_chips(faces_dir, fast_analyzer, recogniser):
    chips = _chips(_real_photos(faces_dir, 3, 60), fast_analyzer, recogniser)
    assert len(chips) >= 100
    _assert_same_as_dlib(recogniser, chips)


def test_a_batch_equals_its_chips_one_by_one(faces_dir, fast_analyzer, recogniser):
    group = sorted((faces_dir / "groups").iterdir())[0]
    image = load_image(group)
    boxes = [detection.bbox for detection in fast_analyzer.detector.detect(image)[:4]]
    assert len(boxes) >= 3
    together = recogniser.describe(image, boxes)
    alone = np.concatenate([recogniser.describe(image, [box]) for box in boxes])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert recogniser.describe(image, []).shape == (0, 128)


def test_both_backends_share_one_fingerprint_and_the_env_picks_the_backend(monkeypatch, recogniser):
    monkeypatch.setenv(ENV_BACKEND, "dlib")
    reference = DlibRecogniser()
    assert reference.backend == "dlib" and recogniser.backend == "onnx"
    assert reference.fingerprint == recogniser.fingerprint
    chip = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)  # any pixels
    np.testing.assert_allclose(reference.describe_chips([chip]), recogniser.describe_chips([chip]), atol=TOLERANCE)
    with pytest.raises(CastkeepError, match="unknown dlib backend"):
        DlibRecogniser(backend="tensorflow")


def test_the_graph_has_dlibs_layers(dat_bytes):
    import onnx

    net = dlib_onnx.parse(dat_bytes)
    assert net.means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)  # dlib's input_rgb_image defaults
    convolutions = [layer for layer in net.layers if layer.spec.kind == "con"]
    assert len(convolutions) == 29 and sum(layer.spec.stride == 2 for layer in convolutions) == 5
    # dlib's con_ default: filter/2 padding at stride 1, none at stride 2
    assert all(layer.padding == ((0, 0) if layer.spec.stride == 2 else (1, 1)) for layer in convolutions)
    model = onnx.load_from_string(dlib_onnx.build(net))
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    # the stage whose 3x3 block output meets a 4x4 shortcut pads it, as dlib's add_prev_ does
    assert ops.count("Conv") == 29 and ops.count("Pad") >= 4 and ops.count("AveragePool") == 4


def _model_copy(tmp_path: Path, descriptor: bytes) -> Path:
    """A model folder in tmp with `descriptor` as the .dat (the real files are never touched)."""
    folder = tmp_path / "dlib_models"
    folder.mkdir()
    (folder / DESCRIPTOR_MODEL).write_bytes(descriptor)
    shutil.copyfile(default_model_dir() / SHAPE_MODEL, folder / SHAPE_MODEL)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "cut_in_header", "flipped_version", "trailing_bytes", "other_model"])
def test_a_damaged_dat_is_a_clear_model_error(tmp_path, dat_bytes, damage):
    if damage == "truncated":
        data = dat_bytes[: len(dat_bytes) // 2]
    elif damage == "cut_in_header":
        data = dat_bytes[:300]
    elif damage == "flipped_version":
        data = dat_bytes.replace(b"con_4", b"con_9", 1)
    elif damage == "trailing_bytes":
        data = dat_bytes + b"\x01\x02"
    else:
        data = (default_model_dir() / SHAPE_MODEL).read_bytes()
    folder = _model_copy(tmp_path, data)
    with pytest.raises(ModelNotFoundError, match="truncated or corrupt") as error:
        DlibRecogniser(folder)
    assert DESCRIPTOR_MODEL in str(error.value)


def test_dlibs_own_backend_also_names_a_damaged_dat(tmp_path, dat_bytes):
    folder = _model_copy(tmp_path, dat_bytes[:1000])
    with pytest.raises(ModelNotFoundError, match="could not read"):
        DlibRecogniser(folder, backend="dlib")
