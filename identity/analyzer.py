"""FaceAnalyzer: image → faces with box, keypoints, dense landmarks, head pose, quality and an
ArcFace embedding. The one entry point the store, generation scoring and the CLI build on."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from ..errors import CastkeepError, FaceIndexError, MultipleFacesError, NoFaceError
from ..landmarks.detection import Detection, FaceDetector, select_face
from ..landmarks.images import ImageInput, describe_source, load_image
from ..landmarks.mesh import DenseLandmarker, MeshResult, resolve_landmarker
from ..landmarks.model_pack import ModelPack
from ..landmarks.pose import HeadPose, pose_from_keypoints, pose_from_matrix
from ..landmarks.quality import QualityReport, QualityThresholds, assess
from .embedder import ArcFaceEmbedder, align_face


@dataclass
class Face:
    index: int
    bbox: np.ndarray
    kps: np.ndarray
    det_score: float
    embedding: np.ndarray
    pose: HeadPose
    quality: QualityReport
    landmarks_106: np.ndarray | None = None
    mesh: MeshResult | None = None
    detection_attempt: int = 0

    @property
    def size(self) -> float:
        return float(min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))

    def to_dict(self, *, include_points: bool = False, include_embedding: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "bbox": [round(float(v), 1) for v in self.bbox],
            "det_score": round(self.det_score, 4),
            "kps": [[round(float(x), 1), round(float(y), 1)] for x, y in self.kps],
            "pose": self.pose.to_dict(),
            "quality": self.quality.to_dict(),
            "dense_landmarks": 0 if self.mesh is None else int(self.mesh.points.shape[0]),
            "landmarks_106": 0 if self.landmarks_106 is None else int(self.landmarks_106.shape[0]),
        }
        if self.mesh is not None and self.mesh.blendshapes:
            top = sorted(self.mesh.blendshapes.items(), key=lambda kv: -kv[1])[:5]
            data["top_blendshapes"] = {k: round(v, 3) for k, v in top}
        if include_points:
            if self.mesh is not None:
                data["mesh"] = np.round(self.mesh.points[:, :2], 1).tolist()
            if self.landmarks_106 is not None:
                data["landmarks_106_points"] = np.round(self.landmarks_106, 1).tolist()
        if include_embedding:
            data["embedding"] = [round(float(v), 6) for v in self.embedding]
        return data


class PhotoFace(int):
    """A face index written after a file name (`photo.jpg:2`): errors about it say so, not `--face 2`."""


@dataclass
class Analysis:
    source: str
    width: int
    height: int
    faces: list[Face] = field(default_factory=list)

    def face(self, index: int | None = None) -> Face:
        """The face a single-face command works on: `index`, or the largest (index 0)."""
        if not self.faces:
            raise NoFaceError("no face found", path=self.source)
        if index is None:
            return self.faces[0]
        if not 0 <= index < len(self.faces):
            asked = f"face {index} (the ':{index}' after the file name)" if isinstance(index, PhotoFace) \
                else f"--face {index}"
            raise FaceIndexError(f"{asked} out of range: {len(self.faces)} face(s) found "
                                 f"(0..{len(self.faces) - 1})", path=self.source)
        return self.faces[index]

    def single_face(self) -> Face:
        """The only face; errors on none or several (registration wants exactly one person)."""
        if len(self.faces) > 1:
            raise MultipleFacesError(f"{len(self.faces)} faces found, expected one "
                                     f"(crop the photo or choose one with --face)", path=self.source)
        return self.face()

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        return {"image": self.source, "width": self.width, "height": self.height,
                "faces": [f.to_dict(**kwargs) for f in self.faces]}


@dataclass
class ImageResult:
    """One image of `FaceAnalyzer.analyze_many`: its analysis, or why it could not be read."""

    source: str
    analysis: Analysis | None = None
    error: CastkeepError | None = None
    image: np.ndarray | None = None  # the decoded BGR pixels, for work on the same faces (dlib, drawing)


def _prefetched(sources: Iterable[ImageInput], ahead: int) -> Iterator[tuple[ImageInput, np.ndarray | CastkeepError]]:
    """(source, decoded BGR image or its ImageError) in order, decoding up to `ahead` images in a thread
    (decoders release the GIL, so this overlaps the model runs). `ahead` 0 decodes in the caller's thread:
    for one image (a server's request) a thread has nothing to overlap, and costs its start and join."""
    def load(source: ImageInput) -> np.ndarray | CastkeepError:
        try:
            return load_image(source)
        except CastkeepError as exc:
            return exc

    if ahead <= 0:
        yield from ((source, load(source)) for source in sources)
        return
    queue: deque[tuple[ImageInput, Future[np.ndarray | CastkeepError]]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="castkeep-decode") as pool:
        for source in sources:
            queue.append((source, pool.submit(load, source)))
            if len(queue) > ahead:
                first, future = queue.popleft()
                yield first, future.result()
        while queue:
            first, future = queue.popleft()
            yield first, future.result()


# An image read and detected, waiting for its faces to be embedded with the next batch (or its read error).
_Pending = tuple[ImageInput, Union[np.ndarray, CastkeepError], list[Detection], list[np.ndarray]]


class FaceAnalyzer:
    """Composes SCRFD detection, ArcFace embedding, and optionally 106-point and dense landmarks."""

    def __init__(self, pack: ModelPack, *, dense: bool = True, landmarks_106: bool = True,
                 flip: bool = False, landmarker_path: str | os.PathLike | None = None,
                 thresholds: QualityThresholds = QualityThresholds(),
                 selection: str = "largest") -> None:
        self.pack = pack
        self.detector = FaceDetector(pack.model("detection"))
        self.embedder = ArcFaceEmbedder(pack.model("recognition"), flip=flip)
        self.landmark_model = pack.model("landmark_2d_106") if landmarks_106 and pack.has("landmark_2d_106") else None
        self.thresholds = thresholds
        self.selection = selection
        self.dense: DenseLandmarker | None = None
        if dense:
            self.dense = DenseLandmarker(resolve_landmarker(landmarker_path, search=(pack.path,)))

    @classmethod
    def from_pretrained(cls, pack: str | os.PathLike | ModelPack | None = None, *, device: str = "cpu",
                        **kwargs: Any) -> FaceAnalyzer:
        if not isinstance(pack, ModelPack):
            pack = ModelPack.from_pretrained(pack, device=device)
        return cls(pack, **kwargs)

    def close(self) -> None:
        if self.dense is not None:
            self.dense.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fingerprint(self) -> str:
        return self.pack.fingerprint

    def analyze(self, source: ImageInput, *, dense: bool | None = None, max_faces: int = 0) -> Analysis:
        """All faces in an image, ordered by `selection` (largest first by default)."""
        image = load_image(source)
        detections, crops = self._detect(image, max_faces)
        return self._analysis(source, image, detections, crops, self.embedder.embed_aligned(crops), dense)

    def analyze_many(self, sources: Iterable[ImageInput], *, dense: bool | None = None, max_faces: int = 0,
                     batch_faces: int = 32, prefetch: int = 4) -> Iterator[ImageResult]:
        """`analyze` over many images, one `ImageResult` per source in order (an unreadable image is a
        result with its error, not an exception). Faster than calling `analyze` in a loop: the next images
        are decoded in a thread while the models run, and the faces of consecutive images are embedded in
        one batch of up to `batch_faces` crops. At most `prefetch` + the images of one batch are held in
        memory, however many sources there are."""
        pending: list[_Pending] = []
        faces = 0
        for source, loaded in _prefetched(sources, prefetch):
            if isinstance(loaded, CastkeepError):
                pending.append((source, loaded, [], []))
                continue
            detections, crops = self._detect(loaded, max_faces)
            pending.append((source, loaded, detections, crops))
            faces += len(crops)
            if faces >= batch_faces:
                yield from self._embedded(pending, dense)
                pending, faces = [], 0
        yield from self._embedded(pending, dense)

    def _embedded(self, pending: list[_Pending], dense: bool | None) -> Iterator[ImageResult]:
        """The results of detected images, their faces embedded in one batch."""
        embeddings = self.embedder.embed_aligned([crop for *_, crops in pending for crop in crops])
        start = 0
        for source, loaded, detections, crops in pending:
            if isinstance(loaded, CastkeepError):
                yield ImageResult(describe_source(source), error=loaded)
                continue
            own = embeddings[start:start + len(crops)]
            start += len(crops)
            yield ImageResult(describe_source(source), self._analysis(source, loaded, detections, crops, own, dense),
                              image=loaded)

    def _detect(self, image: np.ndarray, max_faces: int) -> tuple[list[Detection], list[np.ndarray]]:
        """Faces ordered by `selection`, and their aligned crops."""
        detections = self.detector.detect(image)
        if detections and self.selection != "largest":
            first = select_face(detections, image.shape, self.selection)
            detections.insert(0, detections.pop(first))
        if max_faces:
            detections = detections[:max_faces]
        return detections, [align_face(image, d.kps, self.embedder.input_size) for d in detections]

    def _analysis(self, source: ImageInput, image: np.ndarray, detections: Sequence[Detection],
                  crops: Sequence[np.ndarray], embeddings: np.ndarray, dense: bool | None) -> Analysis:
        faces = self._faces(image, detections, crops, embeddings,
                            dense=self.dense is not None if dense is None else dense)
        return Analysis(source=describe_source(source), width=int(image.shape[1]), height=int(image.shape[0]),
                        faces=faces)

    def _faces(self, image: np.ndarray, detections: Sequence[Detection], crops: Sequence[np.ndarray],
               embeddings: np.ndarray, *, dense: bool) -> list[Face]:
        faces = []
        for index, (detection, crop, embedding) in enumerate(zip(detections, crops, embeddings, strict=True)):
            mesh = self.dense.detect(image, detection.bbox) if dense and self.dense is not None else None
            if mesh is not None and mesh.matrix is not None:
                pose = pose_from_matrix(mesh.matrix)
            else:
                pose = pose_from_keypoints(detection.kps)
            landmarks_106 = None
            if self.landmark_model is not None:
                landmarks_106 = self._landmarks_106(image, detection)
            face_px = min(detection.width, detection.height)
            quality = assess(face_px, detection.score, crop, pose, self.thresholds)
            faces.append(Face(index=index, bbox=detection.bbox, kps=detection.kps,
                              det_score=detection.score, embedding=embedding, pose=pose,
                              quality=quality, landmarks_106=landmarks_106, mesh=mesh,
                              detection_attempt=detection.attempt))
        return faces

    def _landmarks_106(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        # insightface's Landmark.get reads face.bbox and writes face[taskname].
        from insightface.app.common import Face as InsightFace

        assert self.landmark_model is not None  # callers check first
        holder = InsightFace(bbox=detection.bbox, kps=detection.kps, det_score=detection.score)
        return np.asarray(self.landmark_model.get(image, holder), dtype=np.float32)[:, :2]

    def embed(self, source: ImageInput, *, face: int | None = None, single: bool = False,
              dense: bool = False) -> Face:
        """The embedding-bearing Face for one image: `face` index, the only face, or the default."""
        analysis = self.analyze(source, dense=dense)
        return analysis.single_face() if single and face is None else analysis.face(face)
