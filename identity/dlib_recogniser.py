"""dlib's ResNet face descriptor: a second recogniser from another model family than ArcFace.

dlib's `dlib_face_recognition_resnet_model_v1` (a ResNet-29 trained with a metric loss on about 3 million
faces, none of insightface's WebFace data) maps a 150x150 aligned chip to a 128-d descriptor; two faces
are the same person when the Euclidean distance of their descriptors is below 0.6 (dlib's own threshold).
Faces come from castkeep's SCRFD detector, never dlib's HOG detector (which misses about 1 % of LFW
photos): the SCRFD box is mapped to the box shape dlib's 5-point landmark model was trained on, the
5-point model places the landmarks, and `dlib.get_face_chip` aligns the chip.

The weights ship in the `face_recognition_models` package. Its `__init__` imports `pkg_resources`
(gone from recent setuptools), so the files are found without importing it.

The network runs on onnxruntime by default (backend "onnx"): identity/dlib_onnx.py converts dlib's `.dat`
file to an ONNX graph in memory at load (about 0.1 s; a cache would save little), and its descriptors
equal dlib's own to float32 rounding (largest difference measured over 258 real chips: 4.5e-7 per
component, 1.2e-6 Euclidean), at 2.5-8 ms per chip on 2 busy CPU cores against dlib-bin's 73-94 ms (built
without BLAS). Backend "dlib" (`backend=` or $CASTKEEP_DLIB_BACKEND) runs dlib's own network, the
reference. Both are the same weights in the same space, so they share one `fingerprint`: descriptors
stored by either stay valid.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CastkeepError, MissingDependencyError, ModelNotFoundError
from ..utils import file_sha256

DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
DIM = 128
CHIP_SIZE = 150      # what the ResNet was trained on
CHIP_PADDING = 0.25  # dlib's documented default for face recognition chips

# The SCRFD box → the box dlib's HOG detector would draw around the same face (its 5-point model was
# trained on those): left, top, right, bottom as fractions of the SCRFD box's width and height. Medians
# over the 220 faces both detectors found in every 4th photo of ../shared/faces/lfw_gallery. With the
# mapped box, descriptors differ from those of dlib's own HOG pipeline by a median Euclidean 0.048
# (raw SCRFD box: 0.079; the same-person threshold is 0.6).
SCRFD_TO_DLIB_BOX = (-0.12, 0.14, 1.02, 0.96)

ENV_MODELS = "CASTKEEP_DLIB_MODELS"
ENV_BACKEND = "CASTKEEP_DLIB_BACKEND"
BACKENDS = ("onnx", "dlib")


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise MissingDependencyError("the dlib scorer needs dlib: pip install dlib-bin face_recognition_models") from None
    return dlib


def default_model_dir() -> Path:
    """$CASTKEEP_DLIB_MODELS, else the `models/` folder of the installed face_recognition_models."""
    explicit = os.environ.get(ENV_MODELS)
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("face_recognition_models")  # finds it without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("dlib's face models not found: pip install face_recognition_models "
                                 f"(or set {ENV_MODELS} to a folder holding {DESCRIPTOR_MODEL} and {SHAPE_MODEL})")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def default_backend() -> str:
    """$CASTKEEP_DLIB_BACKEND, else "onnx"."""
    return os.environ.get(ENV_BACKEND) or "onnx"


def dlib_box(bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """The dlib-style (left, top, right, bottom) box for an SCRFD (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = (float(v) for v in bbox[:4])
    width, height = x1 - x0, y1 - y0
    left, top, right, bottom = SCRFD_TO_DLIB_BOX
    return (round(x0 + left * width), round(y0 + top * height),
            round(x0 + right * width), round(y0 + bottom * height))


class DlibRecogniser:
    """128-d dlib descriptors of faces given by their SCRFD boxes, in BGR images (castkeep's format).

    `backend`: "onnx" (default; $CASTKEEP_DLIB_BACKEND overrides the default) runs the network on
    onnxruntime with `providers` (default CPU; e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"] with
    onnxruntime-gpu), "dlib" runs dlib's own. dlib's 5-point model and `get_face_chip` align the chips either way.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, *, backend: str | None = None,
                 providers: Sequence[Any] | None = None) -> None:
        self._dlib = _import_dlib()
        self.backend = backend or default_backend()
        if self.backend not in BACKENDS:
            raise CastkeepError(f"unknown dlib backend '{self.backend}': use one of {', '.join(BACKENDS)}")
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        self.descriptor_path = folder / DESCRIPTOR_MODEL
        shape_path = folder / SHAPE_MODEL
        for path in (self.descriptor_path, shape_path):
            if not path.is_file():
                raise ModelNotFoundError("dlib model file not found (pip install face_recognition_models)", path=path)
        self.shape_predictor = self._dlib.shape_predictor(os.fspath(shape_path))
        self._model: Any = None
        self._session: Any = None
        # What was asked for: onnxruntime falls back to the CPU silently (`providers` says what runs).
        self.requested_providers = list(providers) if providers else ["CPUExecutionProvider"]
        if self.backend == "onnx":
            from .dlib_onnx import convert, descriptor_session

            self._session = descriptor_session(convert(self.descriptor_path),
                                               None if providers is None else list(providers))
        else:
            self._model = self._load_dlib_network()
        self._fingerprint: str | None = None

    def _load_dlib_network(self) -> Any:
        try:
            return self._dlib.face_recognition_model_v1(os.fspath(self.descriptor_path))
        except RuntimeError as exc:  # dlib's serialization_error: a truncated or foreign file
            raise ModelNotFoundError(f"dlib could not read its face recognition model ({' '.join(str(exc).split())}); "
                                     "reinstall face_recognition_models", path=self.descriptor_path) from None

    @property
    def providers(self) -> list[str]:
        """What the descriptor network really runs on: the onnxruntime session's providers, or ["dlib"]."""
        return list(self._session.get_providers()) if self._session is not None else ["dlib"]

    @property
    def model(self) -> Any:
        """dlib's own network (`face_recognition_model_v1`), the reference; loaded on first use by the onnx backend."""
        if self._model is None:
            self._model = self._load_dlib_network()
        return self._model

    @property
    def fingerprint(self) -> str:
        """`dlib:<model file>:<sha256 prefix>`, like a model pack's fingerprint; the same for both backends."""
        if self._fingerprint is None:
            digest = file_sha256(self.descriptor_path)[:16]
            self._fingerprint = f"dlib:{DESCRIPTOR_MODEL.removesuffix('.dat')}:{digest}"
        return self._fingerprint

    def landmarks(self, image: np.ndarray, bbox: Sequence[float]) -> Any:
        """dlib's 5 landmarks (a `full_object_detection`) inside the mapped SCRFD box. `image` is RGB."""
        return self.shape_predictor(image, self._dlib.rectangle(*dlib_box(bbox)))

    def chip(self, image: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
        """The 150x150 RGB chip the descriptor is computed on, for a face in a BGR image."""
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        shape = self.landmarks(rgb, bbox)
        return np.asarray(self._dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def describe_chips(self, chips: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, 128) float32 descriptors of 150x150 uint8 RGB chips (`chip`), all in one onnxruntime run."""
        if len(chips) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        if self._session is not None:
            from .dlib_onnx import describe_chips

            return describe_chips(self._session, np.stack([np.asarray(c) for c in chips]))
        return np.asarray([np.asarray(self.model.compute_face_descriptor(np.ascontiguousarray(c)), dtype=np.float32)
                           for c in chips])

    def describe(self, image: np.ndarray, bboxes: Sequence[Sequence[float]]) -> np.ndarray:
        """(N, 128) float32 descriptors of the faces at `bboxes` (SCRFD boxes) in a BGR image."""
        return self.describe_chips([self.chip(image, bbox) for bbox in bboxes])


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors (dlib's metric; < 0.6 = same person by dlib's rule)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
