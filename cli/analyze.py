"""`castkeep analyze`: faces, boxes, landmarks, pose and quality for each image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import CastkeepError, ImageError
from ..utils import progress
from .common import emit, face_option, json_option, make_analyzer, model_options


def _face_line(face: dict[str, Any]) -> str:
    pose, quality = face["pose"], face["quality"]
    box = ",".join(f"{v:.0f}" for v in face["bbox"])
    verdict = "ok" if quality["usable"] else f"unusable: {quality['reason']}"
    return (f"  face {face['index']}: box [{box}] score {face['det_score']:.2f}  "
            f"yaw {pose['yaw']:+.0f} pitch {pose['pitch']:+.0f} roll {pose['roll']:+.0f}  "
            f"{face['dense_landmarks']} mesh pts  quality {quality['score']:.2f} ({verdict})")


def _text(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        if "error" in result:
            lines.append(f"{result['image']}: error: {result['error']}")
            continue
        lines.append(f"{result['image']} ({result['width']}x{result['height']}): "
                     f"{len(result['faces'])} face(s)")
        lines.extend(_face_line(face) for face in result["faces"])
        if result.get("drawing"):
            lines.append(f"  drawn to {result['drawing']}")
    return "\n".join(lines)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--draw", "draw", type=click.Path(path_type=Path), default=None,
              help="Write the image with boxes and landmarks drawn on it to this PNG "
                   "(with several images: a folder, one PNG per image).")
@click.option("--points", is_flag=True, help="Include every landmark coordinate in --json output.")
@click.option("--no-dense", is_flag=True, help="Skip the MediaPipe 478-point mesh (faster; pose then "
                                              "comes from the 5 keypoints).")
@click.option("--keep-going", is_flag=True, help="Report unreadable images and continue instead of stopping.")
@face_option
@model_options
@json_option
def analyze(images: tuple[Path, ...], draw: Path | None, points: bool, no_dense: bool, keep_going: bool,
            face_index: int | None, models: str | None, device: str, as_json: bool) -> None:
    """Detect faces in IMAGES and report boxes, landmarks, head pose and quality.

    Exits non-zero if an image cannot be read or holds no face (unless --keep-going).
    """
    from ..landmarks.drawing import save_drawing
    from ..landmarks.images import load_image

    results: list[dict[str, Any]] = []
    failed = False
    with make_analyzer(models, device, dense=not no_dense) as analyzer:
        for path in progress(images, label="analyze", enabled=len(images) > 3):
            try:
                image = load_image(path)
                analysis = analyzer.analyze(image)
                analysis.source = str(path)
                if face_index is not None or (not analysis.faces and not keep_going):
                    # raises NoFaceError / FaceIndexError naming the file
                    chosen = analysis.face(face_index)
                    if face_index is not None:
                        analysis.faces = [chosen]
                result = analysis.to_dict(include_points=points)
                if draw is not None:
                    target = draw / f"{path.stem}.png" if len(images) > 1 else draw
                    target.parent.mkdir(parents=True, exist_ok=True)
                    save_drawing(image, analysis.faces, target)
                    result["drawing"] = str(target)
            except CastkeepError as exc:
                if not keep_going:
                    raise
                failed = True
                result = {"image": str(path), "error": str(exc)}
            results.append(result)
    output: Any = results[0] if len(results) == 1 and "error" not in results[0] else {"images": results}
    emit(output, as_json, lambda _: _text(results))
    if failed or any(not r.get("faces") for r in results):
        raise SystemExit(4 if not failed else ImageError.exit_code)
