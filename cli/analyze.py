"""`castkeep analyze`: faces, boxes, landmarks, pose and quality for each image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..errors import CastkeepError, ImageError
from ..utils import IMAGE_SUFFIXES, progress
from .common import emit, expand_images, face_option, json_option, make_analyzer, model_options


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


def drawing_targets(images: tuple[Path, ...], draw: Path) -> list[Path]:
    """Where each image's drawing goes, checked before any model loads: one image → the file `draw` (a
    known image extension; an existing folder means a PNG inside it); several → `draw` is a folder with one
    PNG per image, `stem.png`, `stem-2.png`... when stems repeat. Never an input photo's own path."""
    inputs = {_same_file_key(path) for path in images}
    if len(images) == 1 and not draw.is_dir():
        if draw.suffix.lower() not in IMAGE_SUFFIXES:
            raise click.BadParameter(f"{str(draw)!r} needs an image extension ({', '.join(sorted(IMAGE_SUFFIXES))})",
                                     param_hint="--draw")
        if _same_file_key(draw) in inputs or any(_is_same_file(draw, path) for path in images):
            raise click.BadParameter(f"{str(draw)!r} is the input photo; drawing there would overwrite it",
                                     param_hint="--draw")
        return [draw]
    if draw.exists() and not draw.is_dir():
        raise click.BadParameter(f"{str(draw)!r} is a file; with several images --draw names a folder",
                                 param_hint="--draw")
    targets: list[Path] = []
    taken = set(inputs)
    for path in images:
        target, number = draw / f"{path.stem}.png", 1
        while _same_file_key(target) in taken:  # two inputs named alike, or an input PNG inside the folder
            number += 1
            target = draw / f"{path.stem}-{number}.png"
        taken.add(_same_file_key(target))
        targets.append(target)
    return targets


def _same_file_key(path: Path) -> str:
    """A key equal for two spellings of one path (relative, through symlinks)."""
    return os.path.normcase(os.path.realpath(path))


def _is_same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file (a hard link, or another case on a case-blind disk)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--draw", "draw", type=click.Path(path_type=Path), default=None,
              help="Write the image with boxes and landmarks drawn on it to this file (.png, .jpg...; an "
                   "existing folder: a PNG inside it; with several images: a folder, one PNG per image, "
                   "stem.png, stem-2.png... when names repeat). Never over an input photo.")
@click.option("--points", is_flag=True, help="Include every landmark coordinate in --json output.")
@click.option("--no-dense", is_flag=True, help="Skip the MediaPipe 478-point mesh (faster; pose then "
                                              "comes from the 5 keypoints).")
@click.option("--keep-going", is_flag=True, help="Report unreadable images and continue instead of stopping.")
@face_option
@model_options
@json_option
def analyze(images: tuple[Path, ...], draw: Path | None, points: bool, no_dense: bool, keep_going: bool,
            face_index: int | None, models: str | None, device: str, as_json: bool) -> None:
    """Detect faces in IMAGES (files or folders) and report boxes, landmarks, head pose and quality. Many
    images are analysed as one batch, with a progress bar.

    Exits non-zero if an image cannot be read or holds no face (unless --keep-going).
    """
    from ..landmarks.drawing import save_drawing

    paths = [Path(image) for image in expand_images(images)]
    targets = drawing_targets(tuple(paths), draw) if draw is not None else []
    results: list[dict[str, Any]] = []
    failed = False
    with make_analyzer(models, device, dense=not no_dense) as analyzer:
        analyzed = analyzer.analyze_many(paths)  # one batch: decoding ahead, faces embedded together
        for number, item in enumerate(progress(analyzed, label="analyze", total=len(paths), enabled=len(paths) > 3)):
            path = paths[number]
            try:
                if item.error is not None:
                    raise item.error
                analysis, image = item.analysis, item.image
                analysis.source = str(path)
                if face_index is not None or (not analysis.faces and not keep_going):
                    # raises NoFaceError / FaceIndexError naming the file
                    chosen = analysis.face(face_index)
                    if face_index is not None:
                        analysis.faces = [chosen]
                result = analysis.to_dict(include_points=points)
                if targets:
                    target = targets[number]
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        save_drawing(image, analysis.faces, target)
                    except OSError as exc:
                        raise ImageError(f"cannot write the drawing ({exc.strerror or exc})", path=target) from None
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
