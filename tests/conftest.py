"""Shared fixtures: the real models and photos in ../shared (CASTKEEP_SHARED overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CASTKEEP_SHARED", ROOT.parent / "shared")).resolve()
PACK_DIR = SHARED / "models" / "buffalo_s_lite"
LANDMARKER = SHARED / "models" / "mediapipe" / "face_landmarker.task"
FACES = SHARED / "faces"

if not PACK_DIR.is_dir() or not FACES.is_dir():  # pragma: no cover - a setup problem, say so loudly
    raise pytest.UsageError(f"test fixtures not found under {SHARED}; set CASTKEEP_SHARED")

# Every castkeep process the tests start (CLI subprocesses included) uses the local models and
# never tries the network.
os.environ["CASTKEEP_MODELS"] = str(PACK_DIR)
os.environ["CASTKEEP_FACE_LANDMARKER"] = str(LANDMARKER)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES


@pytest.fixture(scope="session")
def pack_dir() -> Path:
    return PACK_DIR


@pytest.fixture(scope="session")
def model_pack():
    from castkeep.landmarks.model_pack import ModelPack

    return ModelPack.from_pretrained(PACK_DIR)


@pytest.fixture(scope="session")
def analyzer(model_pack):
    """Detection + embedding + 106 landmarks + dense mesh, shared by the whole session."""
    from castkeep.identity.analyzer import FaceAnalyzer

    with FaceAnalyzer(model_pack, landmarker_path=LANDMARKER) as face_analyzer:
        yield face_analyzer


@pytest.fixture(scope="session")
def fast_analyzer(model_pack):
    """Detection + embedding only (what registration, scoring and benchmarks use in bulk)."""
    from castkeep.identity.analyzer import FaceAnalyzer

    with FaceAnalyzer(model_pack, dense=False, landmarks_106=False) as face_analyzer:
        yield face_analyzer


def write_bad_image(kind: str, folder: Path, photo: Path) -> Path:
    """A broken or unusable image file of one kind, made from a real photo where that matters:
    missing, empty, truncated, text, directory, bomb (over the pixel limit) or noface."""
    from PIL import Image

    from castkeep.landmarks.images import MAX_IMAGE_PIXELS

    target = folder / f"{kind}.jpg"
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncated":
        data = photo.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        target.write_text("this is not a picture\n")
    elif kind == "directory":
        target.mkdir()
    elif kind == "bomb":
        target = folder / "bomb.png"
        side = int(MAX_IMAGE_PIXELS ** 0.5) + 100
        Image.new("1", (side, side)).save(target)  # 1-bit: tiny on disk, huge when decoded
    elif kind == "noface":
        target = folder / "noface.png"
        Image.new("RGB", (320, 240), (90, 140, 200)).save(target)
    elif kind != "missing":
        raise ValueError(f"unknown bad image kind {kind!r}")
    return target


@pytest.fixture
def bad_image(tmp_path):
    return lambda kind, photo: write_bad_image(kind, tmp_path, photo)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run `castkeep` as a user would, in a subprocess: returns CompletedProcess (text)."""
    import subprocess
    import sys

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "castkeep", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600)


@pytest.fixture
def cli():
    return run_cli


def copy_pack(pack_dir: Path, folder: Path) -> Path:
    """Another "model pack" holding the same ONNX files (symlinked) under the folder's name: its
    fingerprint (pack name : recognition file : sha256) differs, so it is another embedding space
    whose embeddings equal buffalo_s_lite's."""
    folder.mkdir(parents=True)
    for onnx in pack_dir.glob("*.onnx"):
        (folder / onnx.name).symlink_to(onnx)
    return folder


@pytest.fixture(scope="session")
def second_pack(tmp_path_factory) -> Path:
    return copy_pack(PACK_DIR, tmp_path_factory.mktemp("packs") / "buffalo_s_copy")
