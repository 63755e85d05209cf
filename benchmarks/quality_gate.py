"""Measure where ArcFace embeddings degrade with face size and blur: the numbers behind the reference quality
gate (landmarks/quality.py).

    python -m castkeep.benchmarks.quality_gate FACES_DIR/lfw_gallery [--people 60] [--json]

Each person's reference is the quality-weighted vector of their other photos (clean, as registered). Every
probe photo is then embedded as it is ("natural": bucketed by its measured face size and sharpness) and
degraded: the whole photo downscaled so the face box is N px (padded back to the original canvas, so the
detector sees what a small face in a larger photo gives), or Gaussian-blurred. Per level: detection rate,
median face size and sharpness, median genuine cosine against the person's reference, TAR (genuine cosine
>= the 0.27 same-person threshold) and FAR (cosine of the probe to every other person's reference >= 0.27).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..identity.similarity import SAME_PERSON_THRESHOLD
from ..utils import IMAGE_SUFFIXES

SIZES = (8, 10, 12, 14, 16, 20, 24, 32, 40, 48, 64)
SIGMAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
FACE_BUCKETS = (0, 40, 60, 80, 90, 100, 150, 1e9)
SHARPNESS_BUCKETS = (0, 15, 30, 50, 75, 100, 150, 1e9)


@dataclass
class Level:
    """Probes at one degradation level (or in one natural bucket)."""

    label: str
    tried: int = 0
    face_px: list[float] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    genuine: list[float] = field(default_factory=list)
    impostor_hits: int = 0
    impostor_pairs: int = 0

    def add(self, face: Any, own: np.ndarray, others: np.ndarray) -> None:
        self.face_px.append(float(face.quality.face_px))
        self.sharpness.append(float(face.quality.sharpness))
        embedding = face.embedding / np.linalg.norm(face.embedding)
        self.genuine.append(float(own @ embedding))
        self.impostor_hits += int(np.sum(others @ embedding >= SAME_PERSON_THRESHOLD))
        self.impostor_pairs += len(others)

    def row(self) -> dict[str, Any]:
        genuine = np.array(self.genuine)
        found = len(genuine)
        return {"level": self.label, "probes": self.tried, "detected": round(found / max(self.tried, 1), 3),
                "face_px": round(float(np.median(self.face_px)), 1) if found else None,
                "sharpness": round(float(np.median(self.sharpness)), 1) if found else None,
                "genuine_median": round(float(np.median(genuine)), 3) if found else None,
                "genuine_p10": round(float(np.percentile(genuine, 10)), 3) if found else None,
                # A probe the detector misses is a failed verification too.
                "tar": round(float(np.sum(genuine >= SAME_PERSON_THRESHOLD)) / max(self.tried, 1), 3),
                "far": round(self.impostor_hits / max(self.impostor_pairs, 1), 4)}


def _people(folder: Path, count: int) -> list[list[Path]]:
    people = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(photos) >= 3:
            people.append(photos)
    return people[:count]


def downscale(image: np.ndarray, face_px: float, target: float) -> np.ndarray:
    """The photo shrunk so its face is `target` (< `face_px`) px, on a canvas of the original size
    (edge-replicated)."""
    import cv2

    scale = target / face_px
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    height, width = image.shape[:2]
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    return cv2.copyMakeBorder(small, top, height - small.shape[0] - top, left, width - small.shape[1] - left,
                              cv2.BORDER_REPLICATE)


def _bucket(value: float, edges: tuple[float, ...]) -> str:
    for low, high in zip(edges, edges[1:], strict=False):
        if value < high:
            return f"{low:g}-{high:g}" if high < 1e9 else f">={low:g}"
    return f">={edges[-2]:g}"


def measure(folder: Path, people: int = 60, probes: int = 2, pack: str | None = None) -> dict[str, list[dict]]:
    import cv2

    from ..identity.analyzer import FaceAnalyzer
    from ..identity.references import combine
    from ..landmarks.images import load_image

    analyzer = FaceAnalyzer.from_pretrained(pack, dense=False, landmarks_106=False)
    photos = _people(folder, people)
    faces = [[analyzer.embed(load_image(p)) for p in person] for person in photos]
    unit = [[f.embedding / np.linalg.norm(f.embedding) for f in person] for person in faces]

    def reference(person: int, leave_out: int) -> np.ndarray:
        kept = [i for i in range(len(unit[person])) if i != leave_out]
        return combine(np.stack([unit[person][i] for i in kept]),
                       np.array([faces[person][i].quality.score for i in kept]))

    centres = [reference(person, -1) for person in range(len(photos))]
    natural_size: dict[str, Level] = {}
    natural_sharp: dict[str, Level] = {}
    sized = {s: Level(f"face {s} px") for s in SIZES}
    blurred = {s: Level(f"blur sigma {s:g}") for s in SIGMAS}
    for person, person_photos in enumerate(photos):
        for index, path in enumerate(person_photos):
            own = reference(person, index)
            others = np.stack([c for other, c in enumerate(centres) if other != person])
            face = faces[person][index]
            size_bucket = _bucket(face.quality.face_px, FACE_BUCKETS)
            sharp_bucket = _bucket(face.quality.sharpness, SHARPNESS_BUCKETS)
            for table, key in ((natural_size, f"face {size_bucket} px"), (natural_sharp, f"sharpness {sharp_bucket}")):
                level = table.setdefault(key, Level(key))
                level.tried += 1
                level.add(face, own, others)
            if index >= probes:
                continue
            image = load_image(path)
            variants = [(sized[s], downscale(image, face.quality.face_px, s)) for s in SIZES if s < face.quality.face_px]
            variants += [(blurred[s], cv2.GaussianBlur(image, (0, 0), s)) for s in SIGMAS]
            for level, pixels in variants:
                level.tried += 1
                found = analyzer.analyze(pixels, dense=False).faces
                if found:
                    level.add(found[0], own, others)
    analyzer.close()

    def ordered(table: dict[str, Level], edges: tuple[float, ...], prefix: str, suffix: str) -> list[dict]:
        keys = [f"{prefix}{_bucket(low, edges)}{suffix}" for low in edges[:-1]]
        return [table[k].row() for k in keys if k in table]

    return {"natural_face_size": ordered(natural_size, FACE_BUCKETS, "face ", " px"),
            "natural_sharpness": ordered(natural_sharp, SHARPNESS_BUCKETS, "sharpness ", ""),
            "downscaled": [sized[s].row() for s in SIZES], "blurred": [blurred[s].row() for s in SIGMAS]}


def format_table(rows: list[dict]) -> str:
    header = f"{'level':<22}{'probes':>7}{'det':>6}{'px':>7}{'sharp':>7}{'gen.med':>9}{'gen.p10':>9}{'TAR':>7}{'FAR':>8}"
    lines = [header]

    def show(r: dict, key: str, spec: str) -> str:
        return "-" if r[key] is None else format(r[key], spec)

    for r in rows:
        lines.append(f"{r['level']:<22}{r['probes']:>7}{r['detected']:>6.2f}{show(r, 'face_px', '.0f'):>7}"
                     f"{show(r, 'sharpness', '.0f'):>7}{show(r, 'genuine_median', '.2f'):>9}{show(r, 'genuine_p10', '.2f'):>9}"
                     f"{r['tar']:>7.2f}{r['far']:>8.4f}")
    return "\n".join(lines)


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--people", default=60, show_default=True, help="How many identities (sorted by name).")
@click.option("--probes", default=2, show_default=True, help="Photos per person degraded synthetically.")
@click.option("--models", default=None, help="Model pack (default: $CASTKEEP_MODELS / buffalo_s_lite).")
@click.option("--json", "as_json", is_flag=True)
def main(folder: Path, people: int, probes: int, models: str | None, as_json: bool) -> None:
    tables = measure(folder, people, probes, models)
    if as_json:
        click.echo(json.dumps(tables, indent=1))
        return
    for name, rows in tables.items():
        click.echo(f"\n{name}\n{format_table(rows)}")


if __name__ == "__main__":
    sys.exit(main())
