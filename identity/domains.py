"""Each scorer's verdict threshold and P(same), fitted separately for photos and for generated images.

P(same) = sigmoid(slope * (score - threshold)), so P >= 0.5 exactly when the verdict is "same person".
Every number below was fitted with buffalo_s_lite (MobileFaceNet ArcFace, largest face, no flip: what
`compare` and the store use) and dlib 20.0 with face_recognition_models 0.3.0 on SCRFD boxes
(identity/dlib_recogniser.py). Refit (prints these constants, with the fit statistics):

    python -m castkeep.benchmarks.calibrate ../shared/faces/lfw_gallery                     # photo
    python -m castkeep.benchmarks.calibrate --domain generated --pairs ../shared/faces/generated_dev/pairs.txt

- photo: ../shared/faces/lfw_gallery (834 LFW photos of 139 people, no one from LFW View-2 fold 1; all
  2,085 genuine and 345,276 impostor pairs, classes weighted equally). ArcFace keeps its published
  calibration (identity/similarity.py, identity/calibration.py: 0.27, slope 22.28). dlib's fitted
  threshold, 0.623, lands next to dlib's own 0.6.
- generated: ../shared/faces/generated_dev (17 identities, 36 reference photos x 181 generated images,
  mostly PhotoMaker: 367 genuine and 367 impostor reference-vs-generated pairs), fitted on every identity.
  Held-out figures come from leave-identities-out cross-validation (each pair judged by a fit that saw none
  of its identities): accuracy ArcFace 93.9 %, dlib 91.7 %, fused 94.1 % (ArcFace at the photo
  threshold: 81.7 %). Generated genuine pairs score far lower than photo pairs (ArcFace median cosine
  about 0.4, stylised lower), so the photo threshold calls a fifth of them "different".

Each scorer's threshold is the midpoint of a class-balanced two-parameter logistic fit (see
`calibration.fit_calibration`); the fused scorer is a class-balanced logistic regression on the two
calibrated log-odds of the same domain (`calibration.fit_fusion`), so its score is a log-odds itself.
"""

from __future__ import annotations

from typing import Any

from . import calibration, similarity
from .calibration import Calibration, Fusion

DOMAINS = ("photo", "generated")


ARCFACE: dict[str, Calibration] = {
    # Unchanged: the LFW-gallery calibration castkeep has always used (fold 1 evaluates it).
    "photo": Calibration(threshold=similarity.SAME_PERSON_THRESHOLD, slope=calibration.PLATT_SLOPE),
    # generated_dev, all identities: balanced accuracy 94.1 %, log-loss 0.165.
    "generated": Calibration(threshold=0.1239, slope=33.4739),
}

DLIB: dict[str, Calibration] = {
    # lfw_gallery: balanced accuracy 98.4 % (dlib's 0.6: 98.4 %), log-loss 0.067.
    "photo": Calibration(threshold=0.6232, slope=-34.1691),
    # generated_dev, all identities: balanced accuracy 91.7 %, log-loss 0.202 (dlib's 0.6 there: 82.6 %).
    "generated": Calibration(threshold=0.7079, slope=-25.5714),
}

FUSION: dict[str, Fusion] = {
    # lfw_gallery: balanced accuracy 99.5 %, log-loss 0.0333 (ArcFace alone 0.0347): on photos dlib adds little.
    "photo": Fusion(weights=(0.9532, 0.1118), bias=0.6786),
    # generated_dev, all identities: balanced accuracy 94.8 %, log-loss 0.125 (ArcFace alone 0.165).
    "generated": Fusion(weights=(0.7481, 0.5432), bias=0.4331),
}

# dlib's own documented rule (distance < 0.6), for reference in reports; its slope is the photo fit's.
DLIB_STANDARD = Calibration(threshold=0.6, slope=DLIB["photo"].slope)


def resolve_domain(domain: str, *sources: Any) -> str:
    """`auto` → "generated" when any image carries a generator's metadata (castkeep's own outputs, A1111,
    ComfyUI, InvokeAI PNGs), else "photo"; any other value as given. `path:N` face specs are understood."""
    if domain != "auto":
        return domain
    from ..landmarks.images import generator_chunk
    from .enrolment import parse_image_spec

    images = (parse_image_spec(source)[0] for source in sources)
    return "generated" if any(generator_chunk(image) is not None for image in images) else "photo"
