"""`castkeep compare`: are two photos the same person?"""

from __future__ import annotations

from pathlib import Path

import click

from ..identity.similarity import SAME_PERSON_THRESHOLD
from .common import emit, json_option, model_options


@click.command()
@click.argument("image_a", type=click.Path(path_type=Path))
@click.argument("image_b", type=click.Path(path_type=Path))
@click.option("--face-a", type=click.IntRange(min=0), default=None,
              help="Face to use in IMAGE_A when it holds several (default: the largest).")
@click.option("--face-b", type=click.IntRange(min=0), default=None,
              help="Face to use in IMAGE_B when it holds several (default: the largest).")
@click.option("--threshold", type=float, default=SAME_PERSON_THRESHOLD, show_default=True,
              help="Cosine similarity at or above which the faces are judged the same person.")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Average each embedding with its mirror image's (test-time augmentation).")
@model_options
@json_option
def compare(image_a: Path, image_b: Path, face_a: int | None, face_b: int | None, threshold: float,
            flip: bool, models: str | None, device: str, as_json: bool) -> None:
    """Cosine similarity of the faces in IMAGE_A and IMAGE_B, and a same/different verdict."""
    from ..identity.comparison import compare as compare_faces

    result = compare_faces(image_a, image_b, models=models, device=device, face_a=face_a, face_b=face_b,
                           threshold=threshold, flip=flip)
    data = {"image_a": str(image_a), "image_b": str(image_b), **result.to_dict()}
    emit(data, as_json, lambda d: (f"similarity {d['similarity']:.4f} "
                                   f"(threshold {d['threshold']:.2f}): "
                                   f"{'same person' if d['same'] else 'different people'}"))
