"""`castkeep compare`: are two photos the same person?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import FINITE_FLOAT, domain_option, emit, json_option, model_options, scorer_option, verdict_text


@click.command()
@click.argument("image_a", type=click.Path(path_type=Path))
@click.argument("image_b", type=click.Path(path_type=Path))
@click.option("--face-a", type=click.IntRange(min=0), default=None,
              help="Face to use in IMAGE_A when it holds several (default: the largest).")
@click.option("--face-b", type=click.IntRange(min=0), default=None,
              help="Face to use in IMAGE_B when it holds several (default: the largest).")
@scorer_option
@domain_option
@click.option("--threshold", type=FINITE_FLOAT, default=None,
              help="Verdict threshold on the scorer's own scale (cosine, dlib distance, fused log-odds) "
                   "[default: the scorer's calibrated one for --domain; arcface photo: 0.27].")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Average each ArcFace embedding with its mirror image's (test-time augmentation).")
@model_options
@json_option
def compare(image_a: Path, image_b: Path, face_a: int | None, face_b: int | None, scorer: str, domain: str,
            threshold: float | None, flip: bool, models: str | None, device: str, as_json: bool) -> None:
    """Whether the faces in IMAGE_A and IMAGE_B are the same person: the chosen scorer's number,
    threshold, P(same) and verdict (with --scorer fused, each scorer's)."""
    from ..identity.comparison import compare as compare_faces
    from ..identity.domains import resolve_domain

    result = compare_faces(image_a, image_b, models=models, device=device, face_a=face_a, face_b=face_b,
                           threshold=threshold, flip=flip, scorer=scorer,
                           domain=resolve_domain(domain, image_a, image_b))
    data = {"image_a": str(image_a), "image_b": str(image_b), **result.to_dict()}

    def text(d: dict[str, Any]) -> str:
        if d["scorer"] == "arcface" and d["domain"] == "photo":  # the familiar one-liner
            return (f"similarity {d['similarity']:.4f} (threshold {d['threshold']:.2f}): "
                    f"{'same person' if d['same'] else 'different people'}")
        return "\n".join(verdict_text(s) for s in d["scores"].values())

    emit(data, as_json, text)
