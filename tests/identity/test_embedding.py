"""ArcFace embeddings: normalised, stable under format changes, discriminative across people."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from castkeep.errors import FaceIndexError, MultipleFacesError, NoFaceError
from castkeep.identity.similarity import SAME_PERSON_THRESHOLD, cosine


@pytest.fixture(scope="module")
def portrait(faces_dir):
    return faces_dir / "deepface_celebs" / "angelina_jolie" / "img1.jpg"


def test_embedding_is_unit_512(fast_analyzer, portrait):
    face = fast_analyzer.embed(portrait)
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    assert abs(np.linalg.norm(face.embedding) - 1) < 1e-5


def test_exif_rotated_and_grayscale_variants_keep_the_identity(fast_analyzer, portrait, tmp_path):
    original = fast_analyzer.embed(portrait).embedding
    source = Image.open(portrait).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 270 CW to display": pixels stored rotated 90° CW
    rotated_path = tmp_path / "exif_rotated.jpg"
    source.transpose(Image.Transpose.ROTATE_270).save(rotated_path, exif=exif, quality=95)
    gray_path = tmp_path / "gray.png"
    source.convert("L").save(gray_path)
    for variant in (rotated_path, gray_path):
        assert cosine(original, fast_analyzer.embed(variant).embedding) >= 0.85, variant.name


def test_same_person_scores_above_different_people(fast_analyzer, faces_dir):
    celebs = faces_dir / "deepface_celebs"
    jolie = [fast_analyzer.embed(p).embedding for p in sorted((celebs / "angelina_jolie").glob("*"))[:3]]
    others = [fast_analyzer.embed(next(iter(sorted((celebs / n).glob("*"))))).embedding
              for n in ("jennifer_aniston", "mark_zuckerberg", "scarlett_johansson")]
    genuine = [cosine(a, b) for i, a in enumerate(jolie) for b in jolie[i + 1:]]
    impostor = [cosine(a, b) for a in jolie for b in others]
    assert min(genuine) > SAME_PERSON_THRESHOLD > max(impostor)


def test_flip_augmentation_is_a_valid_embedding(model_pack, portrait):
    from castkeep.identity.analyzer import FaceAnalyzer

    with FaceAnalyzer(model_pack, dense=False, landmarks_106=False, flip=True) as flipped:
        with FaceAnalyzer(model_pack, dense=False, landmarks_106=False) as plain:
            a, b = flipped.embed(portrait).embedding, plain.embed(portrait).embedding
    assert abs(np.linalg.norm(a) - 1) < 1e-5
    assert 0.9 < cosine(a, b) < 0.99999


def test_face_choice_errors(fast_analyzer, faces_dir):
    group = faces_dir / "groups" / "fr_two_people.jpg"
    with pytest.raises(MultipleFacesError, match="2 faces"):
        fast_analyzer.embed(group, single=True)
    second = fast_analyzer.embed(group, face=1)
    first = fast_analyzer.embed(group)
    assert cosine(first.embedding, second.embedding) < SAME_PERSON_THRESHOLD
    with pytest.raises(FaceIndexError, match="out of range"):
        fast_analyzer.embed(group, face=7)
    blank = np.full((200, 200, 3), 200, np.uint8)
    with pytest.raises(NoFaceError):
        fast_analyzer.embed(blank)
