"""`--device openvino`: the pack's real ONNX models compiled by OpenVINO give onnxruntime's answers (same faces,
same embeddings to float32 rounding), run in float32 with the threads asked for, and a missing OpenVINO is one
line naming the extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from castkeep.errors import MissingDependencyError
from castkeep.identity.analyzer import FaceAnalyzer
from castkeep.landmarks.model_pack import ModelPack
from castkeep.landmarks.openvino_runtime import PROVIDER, OpenVinoSession

pytest.importorskip("openvino")


def photos(faces_dir):
    """A portrait of 20 people, and a group photo (several faces, their order kept)."""
    return [sorted(person.glob("*.jpg"))[0] for person in sorted((faces_dir / "lfw_gallery").iterdir())[:20]] + [
        faces_dir / "groups" / "bbt3.jpg"]


@pytest.fixture(scope="module")
def openvino_pack(pack_dir):
    return ModelPack.from_pretrained(pack_dir, device="openvino")


def test_openvino_gives_onnxruntimes_faces_and_embeddings(model_pack, openvino_pack, faces_dir):
    reference = FaceAnalyzer(model_pack, dense=False, landmarks_106=True)
    compiled = FaceAnalyzer(openvino_pack, dense=False, landmarks_106=True)
    faces = 0
    for photo in photos(faces_dir):
        want, got = reference.analyze(photo), compiled.analyze(photo)
        assert len(got.faces) == len(want.faces), photo
        for a, b in zip(want.faces, got.faces, strict=True):
            # Float32 rounding only: the same detections, the same embedding, the same 106 points (1 - cosine is at
            # most 2e-6 on the floor versions, 3e-7 on the pinned ones; bfloat16 would give 5e-4).
            assert float(a.embedding @ b.embedding) > 1 - 1e-5, photo
            np.testing.assert_allclose(b.bbox, a.bbox, atol=0.01)
            np.testing.assert_allclose(b.kps, a.kps, atol=0.01)
            np.testing.assert_allclose(b.landmarks_106, a.landmarks_106, atol=0.05)
            assert b.det_score == pytest.approx(a.det_score, abs=1e-4)
            faces += 1
    assert faces >= 25
    assert set(openvino_pack.active_providers()) >= {"detection", "recognition", "landmark_2d_106"}
    assert all(runs == [PROVIDER] for runs in openvino_pack.active_providers().values())
    assert openvino_pack.fingerprint == model_pack.fingerprint  # one embedding space, whichever runtime


def test_openvino_runs_float32_on_the_threads_asked_for(pack_dir):
    session = OpenVinoSession(ModelPack.from_pretrained(pack_dir).model_file("recognition"), threads=1)
    # float32, not the bfloat16 OpenVINO picks on CPUs with AMX: ArcFace embeddings would move by up to 5e-4.
    assert str(session._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert session._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    pack = ModelPack.from_pretrained(pack_dir, device="openvino", threads=1)
    assert pack.model("recognition").session._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    # The onnxruntime surface insightface reads: names and shapes, free dimensions as strings.
    (inputs,) = session.get_inputs()
    assert inputs.shape[1:] == [3, 112, 112] and isinstance(inputs.shape[0], str)
    crops = np.random.default_rng(0).normal(size=(3, 3, 112, 112)).astype(np.float32)
    (features,) = session.run(None, {inputs.name: crops})
    assert features.shape == (3, 512)
    again = session.run([session.get_outputs()[0].name], {inputs.name: crops[:1]})[0]
    np.testing.assert_allclose(again[0], features[0], atol=1e-4)  # outputs are copies, not the request's buffer
    assert not np.shares_memory(again, features)


def test_missing_openvino_is_one_line_naming_the_extra(pack_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as when not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'castkeep\[openvino\]'"):
        ModelPack.from_pretrained(pack_dir, device="openvino")
