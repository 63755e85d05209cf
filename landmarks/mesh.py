"""Dense landmarks (478-point face mesh), blendshapes and the head-pose matrix from MediaPipe's
Face Landmarker, run on a crop around each SCRFD face so small faces in group photos work too."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotFoundError
from ..utils import file_sha256

LANDMARKER_URL = ("https://storage.googleapis.com/mediapipe-models/face_landmarker/"
                  "face_landmarker/float16/1/face_landmarker.task")
LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
ENV_LANDMARKER = "CASTKEEP_FACE_LANDMARKER"
# The crop handed to MediaPipe: the face box grown by this factor, squared, then resized so the
# face is large enough for MediaPipe's own short-range detector.
CROP_SCALE = 2.0
CROP_SIZE = 384
# The face oval of the 478-point mesh, in order around the face (MediaPipe's FACEMESH_FACE_OVAL as a closed
# polygon): forehead top (10), down the right side to the chin (152), up the left side.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)

# MediaPipe's own __del__ fails at interpreter shutdown ("TypeError: 'NoneType' object is not
# callable"): close every landmarker still open while the interpreter is intact.
_OPEN: weakref.WeakSet[DenseLandmarker] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for landmarker in list(_OPEN):
        landmarker.close()


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ log lines (glog/TFLite) MediaPipe writes straight to file descriptor 2."""
    if os.environ.get("CASTKEEP_DEBUG"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@dataclass
class MeshResult:
    """Landmarks in image pixels (x, y, z; z in the same pixel scale), blendshapes, pose matrix."""

    points: np.ndarray
    blendshapes: dict[str, float] = field(default_factory=dict)
    matrix: np.ndarray | None = None


def _cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("castkeep"))


def resolve_landmarker(path: str | os.PathLike | None = None, *, search: tuple[Path, ...] = (),
                       download: bool = True) -> Path:
    """Find `face_landmarker.task`: an explicit path, $CASTKEEP_FACE_LANDMARKER, beside the model
    pack, the user cache; else download Google's official file and verify its checksum."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError("face landmarker bundle not found", path=path)
        return path
    env = os.environ.get(ENV_LANDMARKER)
    candidates = [Path(env).expanduser()] if env else []
    for folder in search:
        candidates += [folder / "face_landmarker.task", folder.parent / "mediapipe" / "face_landmarker.task"]
    cached = _cache_dir() / "face_landmarker.task"
    candidates.append(cached)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if not download:
        raise ModelNotFoundError(
            f"MediaPipe face_landmarker.task not found: download {LANDMARKER_URL} to {cached} "
            f"or set {ENV_LANDMARKER}")
    return _download_landmarker(cached)


def _download_landmarker(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(LANDMARKER_URL, timeout=30) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as exc:
            os.unlink(tmp.name)
            raise ModelNotFoundError(
                f"cannot download {LANDMARKER_URL} ({exc}); put the file at {target} "
                f"or set {ENV_LANDMARKER}") from None
    digest = file_sha256(tmp.name)
    if digest != LANDMARKER_SHA256:
        os.unlink(tmp.name)
        raise ModelNotFoundError(f"downloaded face landmarker has sha256 {digest[:12]}…, "
                                 f"expected {LANDMARKER_SHA256[:12]}…; not used")
    os.replace(tmp.name, target)
    return target


class DenseLandmarker:
    """MediaPipe Tasks FaceLandmarker (IMAGE mode). Use as a context manager or call close()."""

    def __init__(self, model_path: str | os.PathLike) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        self.model_path = Path(model_path)
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=os.fspath(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            min_face_detection_confidence=0.3,
            min_face_presence_confidence=0.3,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
            with _quiet_stderr():
                self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError, OSError) as exc:  # MediaPipe: "Unable to open zip archive." and kin
            env = os.environ.get(ENV_LANDMARKER)
            source = f" (set by ${ENV_LANDMARKER})" if env and Path(env).expanduser() == self.model_path else ""
            raise ModelNotFoundError(f"not a usable MediaPipe face landmarker bundle{source} ({exc}); use Google's "
                                     f"face_landmarker.task ({LANDMARKER_URL})", path=self.model_path) from None
        self._warm = False
        _OPEN.add(self)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **kwargs: Any) -> DenseLandmarker:
        return cls(resolve_landmarker(path, **kwargs))

    def close(self) -> None:
        if getattr(self, "_landmarker", None) is not None:
            self._landmarker.close()
            self._landmarker = None
        _OPEN.discard(self)

    def __enter__(self) -> DenseLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(self, image: np.ndarray, bbox: np.ndarray) -> MeshResult | None:
        """Mesh for the face in `bbox` of a BGR image, in image coordinates; None if not found."""
        import cv2
        import mediapipe as mp

        x1, y1, x2, y2 = [float(v) for v in bbox[:4]]
        side = max(x2 - x1, y2 - y1) * CROP_SCALE
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        scale = CROP_SIZE / side
        # Affine crop: out-of-image areas become black instead of shifting the face.
        matrix = np.array([[scale, 0, CROP_SIZE / 2 - cx * scale],
                           [0, scale, CROP_SIZE / 2 - cy * scale]], dtype=np.float64)
        crop = cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        rgb = np.ascontiguousarray(crop[:, :, ::-1])
        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        if self._warm:
            result = self._landmarker.detect(frame)
        else:  # the first call logs its delegate set-up
            with _quiet_stderr():
                result = self._landmarker.detect(frame)
            self._warm = True
        if not result.face_landmarks:
            return None
        landmarks = result.face_landmarks[0]
        points = np.array([[p.x * CROP_SIZE, p.y * CROP_SIZE, p.z * CROP_SIZE] for p in landmarks],
                          dtype=np.float32)
        points[:, 0] = (points[:, 0] - matrix[0, 2]) / scale
        points[:, 1] = (points[:, 1] - matrix[1, 2]) / scale
        points[:, 2] = points[:, 2] / scale
        blendshapes = {}
        if result.face_blendshapes:
            blendshapes = {c.category_name: float(c.score) for c in result.face_blendshapes[0]}
        pose_matrix = None
        if result.facial_transformation_matrixes:
            pose_matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float32)
        return MeshResult(points=points, blendshapes=blendshapes, matrix=pose_matrix)
