"""Synthetic faces anyone may publish: MediaPipe's canonical face mesh, reshaped and painted per character,
rendered with numpy and OpenCV at any yaw. They stand in for people in the README's screenshots (shared
photos are never committed); SCRFD finds them and ArcFace tells the characters apart.

The mesh (468 vertices, 898 triangles, with texture coordinates) is read from the MediaPipe Face Landmarker
bundle (`face_landmarker.task`, Apache-2.0) at run time; nothing derived from it is stored in the repository
but the final screenshot.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Landmark indices of the face's regions (MediaPipe's FaceLandmarksConnections, as closed contours).
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
UPPER_LIDS = ((33, 246, 161, 160, 159, 158, 157, 173, 133), (263, 466, 388, 387, 386, 385, 384, 398, 362))
CREASES = ((247, 30, 29, 27, 28, 56, 190), (467, 260, 259, 257, 258, 286, 414))
NOSTRILS = ((20, 60, 75, 79, 239, 238), (250, 290, 305, 309, 459, 458))
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
CHEEKS = (50, 280)

TEXTURE_SIZE = 1024
FACE_CENTRE = (0.5, 0.52)  # where the face's centre lands, as fractions of the image's width and height
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Character:
    """One synthetic person: the shape of the face (scales of the canonical mesh, in its centimetres) and its
    colours (RGB)."""

    name: str
    skin: RGB
    hair: RGB
    iris: RGB
    lips: RGB
    width: float = 1.0  # the whole face, across
    height: float = 1.0  # the whole face, top to bottom
    jaw: float = 0.0  # widens (+) or narrows (-) the face below the mouth
    nose: float = 0.0  # cm the nose stands out further
    eye_gap: float = 0.0  # cm each eye moves outwards
    brow_lift: float = 0.0  # cm the brows move up
    eye_size: float = 1.0  # scale of each eye about its centre
    mouth_width: float = 1.0  # scale of the mouth across
    long_hair: bool = False
    hairline: float | None = None  # cm on the canonical face (eyes 2.6, top 8.3) where hair starts
    brow_weight: int = 0  # texture pixels the brows grow (+) or shrink (-) by
    glasses: RGB | None = None  # frame colour
    seed: int = 0  # a smooth, symmetric random reshaping of the whole face: the rest of its identity


# Four characters picked from 64 drawn at random over these parameters' ranges, for the lowest largest ArcFace
# cosine between them. Measured with buffalo_s_lite (renders at yaw +-15, +-10 with pitch -+6, against the mean
# of a character's references at -30, 0, +30): a character's own renders 0.86-0.94, another's 0.22-0.34. The
# renders look more alike to ArcFace than photos of different people do (one base mesh, one renderer), so the
# photo calibration calls a few of those pairs "same person" (Ada and Dana above all); the screenshot's probe
# (docs/make_serve_screenshot.py) is one whose three impostors all come out "different".
CAST = (
    Character("Ada", skin=(236, 196, 170), hair=(170, 120, 60), iris=(50, 32, 20), lips=(190, 96, 100),
              width=0.94, height=0.94, jaw=-0.19, nose=0.13, eye_gap=-0.06, brow_lift=-0.43, eye_size=0.95,
              mouth_width=1.13, long_hair=True, hairline=7.17, brow_weight=-2, seed=29),
    Character("Bram", skin=(170, 120, 90), hair=(22, 18, 16), iris=(50, 32, 20), lips=(150, 96, 86),
              width=0.91, height=1.04, jaw=0.18, nose=-0.28, eye_gap=-0.19, brow_lift=0.19, eye_size=1.02,
              brow_weight=2, seed=23),
    Character("Chidi", skin=(122, 82, 58), hair=(120, 60, 30), iris=(50, 32, 20), lips=(190, 96, 100),
              width=1.03, height=1.04, jaw=-0.19, nose=0.93, eye_gap=0.4, brow_lift=0.01, eye_size=0.91,
              mouth_width=1.16, hairline=6.2, brow_weight=5, seed=49),
    Character("Dana", skin=(122, 82, 58), hair=(170, 120, 60), iris=(60, 100, 150), lips=(176, 110, 104),
              width=0.93, height=1.07, jaw=-0.14, nose=-0.06, eye_gap=-0.25, brow_lift=0.02, eye_size=1.16,
              mouth_width=1.04, brow_weight=6, glasses=(30, 30, 34), seed=58),
)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message, read from the wire format (no generated classes needed)."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at:at + size], at + size
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        elif wire == 1:
            value, at = data[at:at + 8], at + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


@dataclass(frozen=True)
class CanonicalMesh:
    vertices: np.ndarray  # (468, 3) cm: x to the face's left (image right), y up, z out of the face
    uv: np.ndarray  # (468, 2) texture coordinates in [0, 1]
    triangles: np.ndarray  # (898, 3) vertex indices

    @classmethod
    def from_task(cls, task: str | Path) -> CanonicalMesh:
        """The canonical mesh in `geometry_pipeline_metadata_landmarks.binarypb` of a Face Landmarker bundle:
        GeometryPipelineMetadata.canonical_mesh (field 1), a Mesh3d of VERTEX_PT vertices (x, y, z, u, v;
        field 3) and triangle indices (field 4)."""
        with zipfile.ZipFile(task) as bundle:
            metadata = bundle.read("geometry_pipeline_metadata_landmarks.binarypb")
        mesh = next(value for field, value in _fields(metadata) if field == 1)
        assert isinstance(mesh, bytes)
        floats: list[bytes] = []
        indices: list[int] = []
        for field, value in _fields(mesh):
            if field == 3 and isinstance(value, bytes):
                floats.append(value)
            elif field == 4 and isinstance(value, int):
                indices.append(value)
        vertex_buffer = np.frombuffer(b"".join(floats), dtype="<f4").astype(np.float64).reshape(-1, 5)
        return cls(vertex_buffer[:, :3], vertex_buffer[:, 3:], np.array(indices, dtype=np.int64).reshape(-1, 3))


def shaped_vertices(mesh: CanonicalMesh, character: Character) -> np.ndarray:
    """The canonical mesh reshaped to the character: smooth, local offsets so the surface stays whole."""
    v = mesh.vertices.copy()
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    below_mouth = np.clip((-3.0 - y) / 6.0, 0.0, 1.0)
    new_x = x * character.width * (1.0 + character.jaw * below_mouth)
    new_y = y * character.height
    nose = np.exp(-((x / 1.6) ** 2 + ((y + 0.3) / 2.6) ** 2))
    new_z = z + character.nose * nose
    for side in (-1.0, 1.0):
        eye = np.exp(-(((x - side * 3.3) / 2.0) ** 2 + ((y - 2.6) / 1.6) ** 2))
        new_x = new_x + side * character.eye_gap * eye
        brow = np.exp(-(((x - side * 3.3) / 2.4) ** 2 + ((y - 4.3) / 0.9) ** 2))
        new_y = new_y + character.brow_lift * brow
    for side in (-1.0, 1.0):
        eye_x, eye_y = side * 3.3, 2.6
        eye = np.exp(-(((x - eye_x) / 1.5) ** 2 + ((y - eye_y) / 1.0) ** 2))
        new_x = new_x + (character.eye_size - 1.0) * (x - eye_x) * eye
        new_y = new_y + (character.eye_size - 1.0) * (y - eye_y) * eye
    mouth = np.exp(-((x / 3.0) ** 2 + ((y + 4.3) / 1.2) ** 2))
    new_x = new_x + (character.mouth_width - 1.0) * x * mouth
    shaped = np.stack([new_x, new_y, new_z], axis=1)
    return shaped + _random_reshaping(v, character.seed)


def _random_reshaping(vertices: np.ndarray, seed: int, bumps: int = 10, radius: float = 5.0,
                      strength: float = 0.45) -> np.ndarray:
    """Offsets (cm) from a few Gaussian bumps at random places on the face, mirrored left to right."""
    if seed == 0:
        return np.zeros_like(vertices)
    rng = np.random.default_rng(seed)
    centres = vertices[rng.choice(len(vertices), bumps, replace=False)]
    moves = rng.normal(0.0, strength, (bumps, 3))
    offsets = np.zeros_like(vertices)
    for centre, move in zip(centres, moves, strict=True):
        for mirror in (1.0, -1.0):
            at = centre * np.array([mirror, 1.0, 1.0])
            weight = np.exp(-np.sum((vertices - at) ** 2, axis=1) / (2 * radius**2))
            offsets += weight[:, None] * move * np.array([mirror, 1.0, 1.0])
    return offsets


def _uv_points(mesh: CanonicalMesh, indices: tuple[int, ...]) -> np.ndarray:
    return np.round(mesh.uv[list(indices)] * TEXTURE_SIZE).astype(np.int32)


def painted_texture(mesh: CanonicalMesh, character: Character) -> np.ndarray:
    """The character's skin, lips, eyes, brows and hair painted in the mesh's texture space (RGB float
    in [0, 1])."""
    rng = np.random.default_rng(character.seed)
    size = TEXTURE_SIZE
    skin = np.array(character.skin, dtype=np.float64)
    # Skin: the base tone with a soft, low-frequency mottle (a flat colour looks like plastic).
    mottle = cv2.resize(rng.normal(0.0, 1.0, (16, 16)), (size, size), interpolation=cv2.INTER_CUBIC)
    paint = np.clip(skin[None, None, :] * (1.0 + 0.035 * mottle[..., None]), 0, 255)
    cheeks = _region(mesh, lambda x, y: abs(abs(x) - 4.2) < 1.6 and abs(y + 0.8) < 1.4, blur=18)
    paint = _blend(paint, (210, 110, 110), cheeks * 0.2)
    if character.hairline is not None:
        hairline = character.hairline
        hair = _region(mesh, lambda x, y: y > hairline + 0.035 * x * x - 0.5 * np.sin(1.7 * x), blur=3)
        paint = _blend(paint, character.hair, hair * 0.97)
    paint = paint.astype(np.uint8)
    shade = tuple(int(c * 0.72) for c in character.skin)
    for crease in CREASES:
        cv2.polylines(paint, [_uv_points(mesh, crease)], False, shade, max(2, size // 300), cv2.LINE_AA)
    for nostril in NOSTRILS:
        points = _uv_points(mesh, nostril).astype(np.float64)
        middle = points.mean(axis=0)
        hull = cv2.convexHull(np.round(middle + 0.6 * (points - middle)).astype(np.int32))
        cv2.fillConvexPoly(paint, hull, tuple(int(c * 0.35) for c in character.skin), cv2.LINE_AA)
    cv2.fillPoly(paint, [_uv_points(mesh, LIPS_OUTER)], character.lips, cv2.LINE_AA)
    dark_lips = tuple(int(c * 0.45) for c in character.lips)
    cv2.fillPoly(paint, [_uv_points(mesh, LIPS_INNER)], dark_lips, cv2.LINE_AA)
    brow: np.ndarray = np.zeros((size, size), np.uint8)
    for brow_contour in (RIGHT_BROW, LEFT_BROW):
        cv2.fillPoly(brow, [_uv_points(mesh, brow_contour)], 255, cv2.LINE_AA)
    if character.brow_weight:
        kernel = np.ones((abs(character.brow_weight) * 2 + 1,) * 2, np.uint8)
        brow = cv2.dilate(brow, kernel) if character.brow_weight > 0 else cv2.erode(brow, kernel)
    paint = _blend(paint, tuple(int(c * 0.9) for c in character.hair), brow / 255.0).astype(np.uint8)
    lid_width = max(3, size // 200)
    for contour, lid in zip((RIGHT_EYE, LEFT_EYE), UPPER_LIDS, strict=True):
        outline = _uv_points(mesh, contour)
        eye = np.zeros((size, size), np.uint8)
        cv2.fillPoly(eye, [outline], 255, cv2.LINE_AA)
        iris = np.full_like(paint, 235)
        (cx, cy), height = outline.mean(axis=0), np.ptp(outline[:, 1])
        radius = int(round(height * 0.7))
        cv2.circle(iris, (int(cx), int(cy)), radius, character.iris, -1, cv2.LINE_AA)
        cv2.circle(iris, (int(cx), int(cy)), int(radius * 0.45), (15, 12, 12), -1, cv2.LINE_AA)
        cv2.circle(iris, (int(cx - radius * 0.3), int(cy - radius * 0.3)), max(2, radius // 5), (250, 250, 250), -1,
                   cv2.LINE_AA)
        paint = _blend(paint, iris, eye / 255.0).astype(np.uint8)
        cv2.polylines(paint, [_uv_points(mesh, lid)], False, (30, 22, 20), lid_width, cv2.LINE_AA)
    return cv2.GaussianBlur(paint, (0, 0), 1.2).astype(np.float64) / 255.0


def _blend(paint: np.ndarray, colour: tuple[int, ...] | np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`paint` with `colour` (an RGB triple or an image) laid over it with opacity `alpha` (per pixel)."""
    over = np.asarray(colour, dtype=np.float64)
    return paint * (1 - alpha[..., None]) + over * alpha[..., None]


def _region(mesh: CanonicalMesh, inside: Callable[[float, float], bool], blur: float) -> np.ndarray:
    """A soft texture-space mask of the triangles whose centre (x, y on the canonical face, cm) is `inside`."""
    region = np.zeros((TEXTURE_SIZE, TEXTURE_SIZE), np.uint8)
    for triangle in mesh.triangles:
        tx, ty = mesh.vertices[triangle, :2].mean(axis=0)
        if inside(float(tx), float(ty)):
            cv2.fillConvexPoly(region, _uv_points(mesh, tuple(int(i) for i in triangle)), 255)
    return cv2.GaussianBlur(region, (0, 0), blur).astype(np.float64) / 255.0


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    a, b = np.radians(yaw), np.radians(pitch)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    nod = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return turn @ nod


def _vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    face = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)


def render(mesh: CanonicalMesh, character: Character, yaw: float = 0.0, pitch: float = 0.0, size: int = 384,
           light: tuple[float, float, float] = (-0.45, 0.5, 0.75), background: RGB = (205, 212, 220),
           texture: np.ndarray | None = None) -> np.ndarray:
    """The character seen from `yaw` degrees (positive: turned to the image's right), an RGB uint8 image.

    A z-buffered rasteriser interpolates texture coordinates and normals over each triangle (Gouraud),
    lit by one directional light plus ambient; drawn at twice the size and shrunk, for smooth edges."""
    scale = 2
    side = size * scale
    texture = painted_texture(mesh, character) if texture is None else texture
    rotation = _rotation(yaw, pitch)
    centre = np.array([0.0, 0.5, 0.0])
    shaped = shaped_vertices(mesh, character)
    vertices = (shaped - centre) @ rotation.T
    normals = _vertex_normals(shaped, mesh.triangles) @ rotation.T
    distance, focal = 70.0, side * 1.5

    def project(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        depth = distance - points[:, 2]
        x = focal * points[:, 0] / depth + side * FACE_CENTRE[0]
        y = -focal * points[:, 1] / depth + side * FACE_CENTRE[1]
        return np.stack([x, y], axis=1), depth

    screen, depth = project(vertices)
    pixels_per_cm = focal / distance

    image = np.empty((side, side, 3), np.float64)
    image[:] = np.array(background, dtype=np.float64)[None, None, :] / 255.0
    image *= np.linspace(1.05, 0.85, side)[:, None, None]
    _draw_head(image, character, yaw, side, pixels_per_cm)

    zbuffer = np.full((side, side), np.inf)
    light_dir = np.array(light) / np.linalg.norm(light)
    for triangle in mesh.triangles:
        corners = screen[triangle]
        x0, y0 = np.floor(corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, side - 1), min(y1, side - 1)
        if x1 < x0 or y1 < y0:
            continue
        (ax, ay), (bx, by), (cx, cy) = corners
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area >= -1e-9:  # facing away (screen y points down, so front faces wind clockwise here)
            continue
        yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1] + 0.5
        w0 = ((bx - xx) * (cy - yy) - (by - yy) * (cx - xx)) / area
        w1 = ((cx - xx) * (ay - yy) - (cy - yy) * (ax - xx)) / area
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
        if not inside.any():
            continue
        z = w0 * depth[triangle[0]] + w1 * depth[triangle[1]] + w2 * depth[triangle[2]]
        window = zbuffer[y0:y1 + 1, x0:x1 + 1]
        visible = inside & (z < window)
        if not visible.any():
            continue
        weights = np.stack([w0[visible], w1[visible], w2[visible]], axis=1)
        uv = weights @ mesh.uv[triangle]
        normal = weights @ normals[triangle]
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        tx = np.clip((uv[:, 0] * TEXTURE_SIZE).astype(int), 0, TEXTURE_SIZE - 1)
        ty = np.clip((uv[:, 1] * TEXTURE_SIZE).astype(int), 0, TEXTURE_SIZE - 1)
        diffuse = np.clip(normal @ light_dir, 0.0, 1.0)
        reflected = 2 * diffuse[:, None] * normal - light_dir
        specular = np.clip(reflected[:, 2], 0.0, 1.0) ** 24 * 0.12
        colour = texture[ty, tx] * (0.42 + 0.68 * diffuse[:, None]) + specular[:, None]
        window[visible] = z[visible]
        target = image[y0:y1 + 1, x0:x1 + 1]
        target[visible] = colour
    if character.glasses is not None:
        _draw_glasses(image, shaped, centre, rotation, project, character.glasses, scale)
    image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _draw_glasses(image: np.ndarray, shaped: np.ndarray, centre: np.ndarray, rotation: np.ndarray, project: Callable,
                  colour: RGB, scale: int) -> None:
    """Two round rims and a bridge, floating 1.2 cm in front of the eyes, drawn over the rendered face."""
    angles = np.linspace(0, 2 * np.pi, 48)
    frame = (np.array(colour, dtype=np.float64) / 255.0).tolist()
    rims = []
    for contour in (RIGHT_EYE, LEFT_EYE):
        eye = shaped[list(contour)].mean(axis=0) + np.array([0.0, -0.2, 1.2])
        ring = eye + np.stack([2.0 * np.cos(angles), 1.6 * np.sin(angles), np.zeros_like(angles)], axis=1)
        points, _ = project((ring - centre) @ rotation.T)
        rims.append(points)
        cv2.polylines(image, [np.round(points).astype(np.int32)], True, frame, 3 * scale, cv2.LINE_AA)
    inner = [rims[0][np.argmax(rims[0][:, 0])], rims[1][np.argmin(rims[1][:, 0])]]
    cv2.line(image, tuple(np.round(inner[0]).astype(int)), tuple(np.round(inner[1]).astype(int)), frame, 3 * scale,
             cv2.LINE_AA)


def _draw_head(image: np.ndarray, character: Character, yaw: float, side: int, pixels_per_cm: float) -> None:
    """Neck, shoulders and hair behind the face mesh (flat shapes; the mesh is drawn over them)."""
    turn = np.sin(np.radians(yaw))
    cx, cy = side * FACE_CENTRE[0], side * FACE_CENTRE[1]
    cm = pixels_per_cm
    skin = np.array(character.skin, dtype=np.float64) / 255.0
    hair = np.array(character.hair, dtype=np.float64) / 255.0
    shirt = np.array([0.30, 0.36, 0.46]) if character.long_hair else np.array([0.42, 0.30, 0.28])
    head_x = cx - turn * 3.0 * cm
    if character.long_hair:
        cv2.ellipse(image, (int(head_x), int(cy + 4 * cm)), (int(10.5 * character.width * cm), int(14 * cm)), 0, 0, 360,
                    (hair * 0.85).tolist(), -1, cv2.LINE_AA)
    shoulders = np.array([[cx - 19 * cm, side], [cx - 15 * cm, cy + 15 * cm], [cx + 15 * cm, cy + 15 * cm],
                          [cx + 19 * cm, side]], np.int32)
    cv2.fillPoly(image, [shoulders], shirt.tolist(), cv2.LINE_AA)
    neck = np.array([[cx - 5.2 * cm, cy + 17 * cm], [cx - 5.2 * cm, cy + 4 * cm], [cx + 5.2 * cm, cy + 4 * cm],
                     [cx + 5.2 * cm, cy + 17 * cm]], np.int32)
    cv2.fillPoly(image, [neck], (skin * 0.72).tolist(), cv2.LINE_AA)
    cv2.ellipse(image, (int(head_x), int(cy - 1.5 * cm)), (int(9.2 * character.width * cm), int(11.2 * cm)), 0, 180, 360,
                hair.tolist(), -1, cv2.LINE_AA)
    cv2.ellipse(image, (int(head_x), int(cy - 1.5 * cm)), (int(8.6 * character.width * cm), int(10.5 * cm)), 0, 0, 180,
                (skin * 0.8).tolist(), -1, cv2.LINE_AA)
