"""How long scoring one generated image takes, the way castkeep scores its outputs.

Each image is resized to a square generation size and written as PNG (what `castkeep generate` writes),
then scored one at a time from disk exactly as an output or `castkeep score` is: decode, SCRFD detection,
ArcFace embedding and dlib's descriptor of the same face (`identity.scorers.describe_face`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import CastkeepError
from ..identity.scorers import describe_face
from ..landmarks.images import load_pil
from ..utils import Progress, no_progress

TARGET_MS = 60.0  # issue 11: detect + embed with both scorers, 512x512, 2 CPU cores


def _as_generated_png(source: Path, target: Path, size: int) -> bool:
    try:
        image = load_pil(source)
    except CastkeepError:
        return False
    image.resize((size, size), Image.Resampling.LANCZOS).save(target)
    return True


def scoring_latency(images: list[Path], analyzer: Any, recogniser: Any, *, size: int = 512,
                    progress: Progress = no_progress) -> dict[str, Any]:
    """Milliseconds per image (p50, p90, mean) to score `size` x `size` PNGs made from `images` with both
    scorers; images where no face is found are timed too (a generated image without a face is scored)."""
    with tempfile.TemporaryDirectory(prefix="castkeep-scoring-") as folder:
        pngs = []
        for number, source in enumerate(images):
            target = Path(folder) / f"{number:04d}.png"
            if _as_generated_png(source, target, size):
                pngs.append(target)
        if not pngs:
            return {"images": 0}
        _score(analyzer, pngs[0], recogniser)  # warm-up: first-call session setup is not latency
        seconds, found = [], 0
        for png in progress(pngs, label="scoring", total=len(pngs)):
            start = time.perf_counter()
            found += _score(analyzer, png, recogniser)
            seconds.append(time.perf_counter() - start)
    ms = np.asarray(seconds) * 1000
    return {
        "images": len(pngs),
        "faces_found": found,
        "size": size,
        "ms_p50": round(float(np.median(ms)), 2),
        "ms_p90": round(float(np.percentile(ms, 90)), 2),
        "ms_mean": round(float(ms.mean()), 2),
        "target_ms": TARGET_MS,
        "meets_target": bool(np.median(ms) <= TARGET_MS),
        "path": "PNG decode + SCRFD + ArcFace + dlib descriptor (identity.scorers.describe_face)",
    }


def _score(analyzer: Any, path: Path, recogniser: Any) -> bool:
    try:
        describe_face(analyzer, path, recogniser=recogniser)
    except CastkeepError:  # no face: the time it takes to find out counts as well
        return False
    return True
