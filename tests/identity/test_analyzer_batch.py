"""`FaceAnalyzer.analyze_many`: a batch gives exactly what `analyze` gives image by image, in order, with an
unreadable image as an error result in its place."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from castkeep.errors import ImageError


@pytest.mark.parametrize("prefetch", [2, 0])
def test_analyze_many_equals_analyze_one_by_one(faces_dir, fast_analyzer, tmp_path, prefetch):
    photos = sorted((faces_dir / "groups").glob("*.jp*g"))[:2] + sorted((faces_dir / "lfw_gallery").rglob("*.jpg"))[:5]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    sources = [*photos[:3], broken, *photos[3:]]
    # batch_faces=2: group photos overflow a batch, so several batches (and an error between them) are exercised
    # prefetch=0 decodes in the caller's thread (a server's one-image request): the same results.
    results = list(fast_analyzer.analyze_many(sources, batch_faces=2, prefetch=prefetch))
    assert [r.source for r in results] == [str(s) for s in sources]
    assert isinstance(results[3].error, ImageError) and results[3].analysis is None
    faces = 0
    for source, result in zip(sources, results, strict=True):
        if source == broken:
            continue
        alone = fast_analyzer.analyze(source)
        assert result.error is None and result.image is not None and result.image.shape[0] == alone.height
        assert len(result.analysis.faces) == len(alone.faces) >= 1
        for batched, single in zip(result.analysis.faces, alone.faces, strict=True):
            np.testing.assert_allclose(batched.bbox, single.bbox)
            np.testing.assert_allclose(batched.embedding, single.embedding, atol=1e-5)
        faces += len(alone.faces)
    assert faces > len(photos)  # the group photos really put several faces in one batch


def test_analyze_many_of_nothing(fast_analyzer):
    assert list(fast_analyzer.analyze_many([])) == []


def test_one_image_is_decoded_without_a_thread(faces_dir):
    """`ahead=0` (what judge_many asks for one image) starts no decoding thread: it would only cost its start."""
    from castkeep.identity.analyzer import _prefetched

    photo = sorted((faces_dir / "lfw_gallery").rglob("*.jpg"))[0]
    seen = []
    for ahead in (1, 0):
        for source, image in _prefetched([photo], ahead):
            assert source == photo and image.ndim == 3
            seen.append(any(t.name.startswith("castkeep-decode") for t in threading.enumerate()))
    assert seen == [True, False]
