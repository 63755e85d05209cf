"""The face landmarker bundle: found locally, or fetched once and checksum-verified."""

from __future__ import annotations

import pytest

from castkeep.errors import ModelNotFoundError
from castkeep.landmarks import mesh


@pytest.fixture
def no_local_bundle(tmp_path, monkeypatch):
    monkeypatch.delenv(mesh.ENV_LANDMARKER, raising=False)
    monkeypatch.setattr(mesh, "_cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache" / "face_landmarker.task"


def test_download_is_verified_and_cached(no_local_bundle, shared_dir, monkeypatch):
    official = shared_dir / "models" / "mediapipe" / "face_landmarker.task"
    monkeypatch.setattr(mesh, "LANDMARKER_URL", official.as_uri())  # stands in for Google's URL
    path = mesh.resolve_landmarker()
    assert path == no_local_bundle and path.read_bytes() == official.read_bytes()
    assert mesh.resolve_landmarker(download=False) == path  # cached: no second download


def test_a_file_with_the_wrong_checksum_is_not_used(no_local_bundle, tmp_path, monkeypatch):
    impostor = tmp_path / "other.task"
    impostor.write_bytes(b"not the official bundle")
    monkeypatch.setattr(mesh, "LANDMARKER_URL", impostor.as_uri())
    with pytest.raises(ModelNotFoundError, match="sha256"):
        mesh.resolve_landmarker()
    assert not no_local_bundle.exists()
    assert not list(no_local_bundle.parent.glob("*.part"))


def test_offline_without_a_bundle_says_where_to_put_it(no_local_bundle):
    with pytest.raises(ModelNotFoundError) as info:
        mesh.resolve_landmarker(download=False)
    assert str(no_local_bundle) in str(info.value) and mesh.ENV_LANDMARKER in str(info.value)
