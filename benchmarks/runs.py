"""Each benchmark end to end, from inputs on disk to a saved result: load the face models, run the
bench, draw its plots, stamp the environment and write `<out_dir>/<name>.json`.

`castkeep bench ...` is a thin layer over these functions; each returns the result dict it wrote
(its `plots` map a label to a PNG path, `result_json` is the JSON file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError
from ..identity.similarity import SAME_PERSON_THRESHOLD
from ..landmarks.model_pack import same_space
from ..utils import Progress, slug
from ..utils import progress as terminal_progress
from .report import plot_heatmap, plot_histogram, plot_roc, save_result

PathLike = str | os.PathLike[str]
DEFAULT_OUT = Path("bench-results")


def _name(text: str) -> str:
    return slug(text, max_length=120)


def check_result_name(name: str | None) -> None:
    """A --name is a file name inside --out, never a path: `../../x` or `/abs` would write elsewhere."""
    if name is None:
        return
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
        raise BenchmarkInputError(f"--name {name!r} must be a file name without folders (the folder is --out)")
    if any(ord(char) < 32 or ord(char) == 127 for char in name) or len(name) > 120:
        raise BenchmarkInputError(f"--name {name!r} must be at most 120 printable characters")


def _pack(models: PathLike | None, device: str) -> Any:
    from ..landmarks.model_pack import ModelPack

    return ModelPack.from_pretrained(models, device=device)


def bench_verify(pairs_file: PathLike, *, root: PathLike | None = None, limit: int | None = None,
                 selection: str = "center", flip: bool = True, baseline: bool = True, name: str | None = None,
                 out_dir: PathLike = DEFAULT_OUT, models: PathLike | None = None, device: str = "cpu",
                 scorer: str = "arcface", domain: str = "photo",
                 progress: Progress = terminal_progress) -> dict[str, Any]:
    """Face verification on a pairs file (LFW protocol), against insightface's FaceAnalysis in the
    same run with `baseline`; ROC and score-histogram plots. `scorer` (arcface, dlib, fused) judges;
    `domain` (photo, generated) picks the default verdict reported as `castkeep.fixed_threshold`."""
    check_result_name(name)
    from .pairs import read_pairs
    from .verification import run_verification

    pairs_file, out_dir = Path(pairs_file), Path(out_dir)
    pairs = read_pairs(pairs_file, None if root is None else Path(root), limit=limit)
    result, curves = run_verification(pairs, _pack(models, device), selection=selection, flip=flip,
                                      baseline=baseline, device=device, scorer=scorer, domain=domain,
                                      progress=progress)
    suffix = "".join(f"-{v}" for v, default in ((scorer, "arcface"), (domain, "photo")) if v != default)
    name = name or _name(f"verify-{pairs_file.parent.name}-{pairs_file.stem}{suffix}")
    roc_path = plot_roc(curves, out_dir / f"{name}-roc.png", f"ROC: {pairs_file.parent.name}/{pairs_file.name}")
    scores = result["scores"]
    labels = np.asarray(scores["same"], dtype=bool)
    castkeep_scores = np.asarray(scores["castkeep"])
    hist_path = plot_histogram({"same person": castkeep_scores[labels], "different people": castkeep_scores[~labels]},
                               out_dir / f"{name}-scores.png",
                               f"castkeep pair similarities ({result['castkeep']['scale']})",
                               threshold=result["castkeep"]["threshold"])
    result["plots"] = {"roc": str(roc_path), "score histogram": str(hist_path)}
    save_result(result, out_dir, name)
    return result


def bench_identify(gallery: PathLike, *, k: int = 2, unknown_fraction: float = 0.2,
                   limit_identities: int | None = None, threshold: float | None = None, seed: int = 0,
                   target_fpir: float = 0.01, selection: str = "center", flip: bool = True, name: str | None = None,
                   out_dir: PathLike = DEFAULT_OUT, models: PathLike | None = None, device: str = "cpu",
                   progress: Progress = terminal_progress) -> dict[str, Any]:
    """1:N identification through a fresh character store, with open-set rejection of held-out people."""
    check_result_name(name)
    from ..identity.analyzer import FaceAnalyzer
    from .identification import read_gallery, run_identification

    gallery = Path(gallery)
    images = read_gallery(gallery, limit_identities=limit_identities)
    with FaceAnalyzer(_pack(models, device), dense=False, landmarks_106=False, selection=selection,
                      flip=flip) as analyzer:
        result = run_identification(images, analyzer, k=k, unknown_fraction=unknown_fraction, seed=seed,
                                    threshold=SAME_PERSON_THRESHOLD if threshold is None else threshold,
                                    target_fpir=target_fpir, progress=progress)
    result["config"] = {"selection": selection, "flip": flip}
    result["plots"] = {}
    save_result(result, out_dir, name or _name(f"identify-{gallery.name}"))
    return result


def bench_store(sizes: Sequence[int], *, kinds: Sequence[str] = ("exact", "hnsw", "ivf"), queries: int = 100,
                seed: int = 0, name: str = "store-scale", out_dir: PathLike = DEFAULT_OUT,
                progress: Progress = terminal_progress) -> dict[str, Any]:
    """Identify latency, recall@10, build time and memory of the store's indexes at each size, each
    against a numpy brute-force search measured in the same run."""
    check_result_name(name)
    from .store_scale import run_store_scale

    result = run_store_scale(list(sizes), kinds=list(kinds), n_queries=queries, seed=seed, progress=progress)
    result["plots"] = {}
    save_result(result, out_dir, _name(name))
    return result


def bench_throughput(images_dir: PathLike, *, limit: int = 100, rounds: int = 3, name: str = "throughput",
                     out_dir: PathLike = DEFAULT_OUT, models: PathLike | None = None, device: str = "cpu",
                     scoring_images: PathLike | None = None, scoring_limit: int = 50, stages: bool = True,
                     progress: Progress = terminal_progress) -> dict[str, Any]:
    """Images/s of castkeep's analyze+embed against insightface's FaceAnalysis.get, as a ratio; with `stages`,
    where the time of one image goes; with `scoring_images`, the latency of scoring one 512x512 generated
    image with both scorers."""
    check_result_name(name)
    from ..errors import MissingDependencyError
    from ..identity.analyzer import FaceAnalyzer
    from ..identity.dlib_recogniser import DlibRecogniser
    from ..landmarks.mesh import DenseLandmarker, resolve_landmarker
    from .throughput import collect_images, run_throughput

    images = collect_images(images_dir, limit)
    pack = _pack(models, device)
    result = run_throughput(images, pack, rounds=rounds, device=device, progress=progress)
    result["images_dir"] = str(images_dir)
    notes: list[str] = []
    if stages or scoring_images is not None:
        with FaceAnalyzer(pack, dense=False, landmarks_106=False) as analyzer:
            recogniser = _optional(lambda: DlibRecogniser(), "dlib", notes)
            if stages:
                from .stages import stage_breakdown

                landmarker = _optional(lambda: DenseLandmarker(resolve_landmarker(search=(pack.path,), download=False)),
                                       "dense mesh", notes)
                try:
                    result["stages"] = stage_breakdown(
                        images, analyzer, recogniser=recogniser, landmarker=landmarker,
                        landmarks_106=_landmarks_106(pack), progress=progress)
                finally:
                    if landmarker is not None:
                        landmarker.close()
            if scoring_images is not None:
                if recogniser is None:
                    raise MissingDependencyError("scoring latency needs dlib: pip install dlib-bin "
                                                 "face_recognition_models")
                from .scoring_latency import scoring_latency

                result["scoring"] = scoring_latency(collect_images(scoring_images, scoring_limit), analyzer,
                                                    recogniser, progress=progress)
                result["scoring"]["images_dir"] = str(scoring_images)
    result["notes"] = notes
    result["plots"] = {}
    save_result(result, out_dir, _name(name))
    return result


def _optional(make: Any, what: str, notes: list[str]) -> Any:
    """`make()`, or None with a note when its model or package is missing (that stage is then not timed)."""
    from ..errors import CastkeepError

    try:
        return make()
    except CastkeepError as exc:
        notes.append(f"{what} not timed: {exc}")
        return None


def _landmarks_106(pack: Any) -> Any:
    """insightface's 106-point model as a per-face callable, when the pack has one."""
    if not pack.has("landmark_2d_106"):
        return None
    from insightface.app.common import Face as InsightFace

    model = pack.model("landmark_2d_106")
    return lambda image, detection: model.get(image, InsightFace(bbox=detection.bbox, kps=detection.kps,
                                                                 det_score=detection.score))


def _stored_reference(named: str, explicit: bool, store: PathLike | None, analyzer: Any, recogniser: Any,
                      notes: list[str]) -> Any:
    """The stored character as a consistency `Reference` (its vector, and its references' dlib descriptors from
    its stored face crops). A character the user named must exist (and match the face models); one only read from the
    run falls back to the run centroid, with a note."""
    from ..errors import CastkeepError, UnknownCharacterError
    from ..identity.reference_faces import ReferenceDescriptors
    from ..identity.store import Store
    from .consistency import Reference

    try:
        with Store.open(store, analyzer=analyzer, create=False) as opened:
            stored = opened.get(named, crops=True)
        if not same_space(stored.fingerprint, analyzer.fingerprint):
            raise UnknownCharacterError(f"character '{named}' was registered with another model "
                                        f"({stored.fingerprint}); use its --models")
        descriptors = ReferenceDescriptors(recogniser, analyzer.detector).of_character(stored)
        return Reference(label=f"character '{stored.name}'", embedding=stored.vector, descriptors=descriptors)
    except UnknownCharacterError:
        if explicit:
            raise
        notes.append(f"character '{named}' from the run is not in the store; scored against the run centroid")
    except CastkeepError as exc:
        if explicit:
            raise
        notes.append(f"no usable store ({exc}); scored against the run centroid")
    return None


def _image_reference(image: PathLike, analyzer: Any, recogniser: Any) -> Any:
    from ..identity.reference_faces import CharacterDescriptors
    from ..identity.scorers import describe_face
    from .consistency import Reference

    features = describe_face(analyzer, image, recogniser=recogniser)
    assert features.descriptor is not None  # given a recogniser, describe_face always describes
    return Reference(label=f"image '{Path(image).name}'", embedding=features.embedding,
                     descriptors=CharacterDescriptors.single(features.descriptor))


def _marked(labels: list[str], flagged: list[str]) -> list[str]:
    return [f"* {label}" if label in flagged else label for label in labels]


def bench_consistency(run_dir: PathLike, *, character: str | None = None, reference_image: PathLike | None = None,
                      store: PathLike | None = None, scorer: str = "fused", domain: str = "generated",
                      threshold: float | None = None, name: str | None = None, out_dir: PathLike | None = None,
                      models: PathLike | None = None, device: str = "cpu",
                      progress: Progress = terminal_progress) -> dict[str, Any]:
    """Identity consistency of a generation run, every image described again by ArcFace and dlib: each
    scorer's verdicts, where the two recognisers disagree, score distribution, consistency rate, pairwise
    matrices (heat maps), outliers; `scorer` drives the headline. Results go to RUN_DIR/consistency."""
    check_result_name(name)
    from ..identity.analyzer import FaceAnalyzer
    from ..identity.dlib_recogniser import DlibRecogniser
    from .consistency import conditioning_record, run_character, run_conditioning, run_consistency, run_images

    if character is not None and reference_image is not None:
        raise BenchmarkInputError("give a stored --character or a --reference image, not both")
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "consistency"
    images = run_images(run_dir, exclude=out_dir.resolve())
    named = None if reference_image is not None else character or run_character(run_dir, images)
    reference = None
    notes: list[str] = []
    recogniser = DlibRecogniser()
    with FaceAnalyzer(_pack(models, device), dense=False, landmarks_106=False) as analyzer:
        if reference_image is not None:
            reference = _image_reference(reference_image, analyzer, recogniser)
        elif named is not None:
            reference = _stored_reference(named, character is not None, store, analyzer, recogniser, notes)
        result = run_consistency(images, analyzer, recogniser, reference=reference, scorer=scorer, domain=domain,
                                 threshold=threshold, progress=progress)
    result["run_dir"] = str(run_dir)
    result["conditioning"] = conditioning_record(run_conditioning(run_dir, images), result["models"]["arcface"])
    result["notes"] = notes
    name = name or _name(f"consistency-{run_dir.resolve().name}")
    result["plots"] = {}
    if result["with_face"] >= 2:
        labels = _marked(result["pairwise"]["labels"], result["agreement"]["disagreeing"])
        marker = " (* = arcface and dlib disagree)" if result["agreement"]["disagreeing"] else ""
        result["plots"]["pairwise heatmap"] = str(plot_heatmap(
            np.asarray(result["pairwise"]["matrix"]), labels, out_dir / f"{name}-pairwise.png",
            f"pairwise ArcFace similarity{marker}"))
        result["plots"]["pairwise heatmap (dlib)"] = str(plot_heatmap(
            np.asarray(result["pairwise"]["dlib"]), labels, out_dir / f"{name}-pairwise-dlib.png",
            f"pairwise dlib distance{marker}", scale=(0.2, 1.2), value_label="dlib distance (lower = more alike)",
            cmap="viridis_r"))
    if result["with_face"]:
        cosine_scale = result["metric"] == "cosine"
        result["plots"]["score histogram"] = str(plot_histogram(
            {"outputs": [r["score"] for r in result["images"]]}, out_dir / f"{name}-scores.png",
            f"{result['scorer']} score vs {result['reference']} ({result['domain']})", threshold=result["threshold"],
            xlabel=result["metric"] if not cosine_scale else "cosine similarity", bins=None if cosine_scale else 30))
    save_result(result, out_dir, name)
    return result


def bench_series(run_dir: PathLike, *, gpu_image_s: float | None = None, name: str | None = None,
                 out_dir: PathLike = DEFAULT_OUT) -> dict[str, Any]:
    """A storyboard run's time, shot by shot: pipeline / scoring / castkeep's own overhead (files, ledger,
    the rest), the overhead as a share of the pipeline time, and projected onto a GPU image of
    `gpu_image_s` (default: a 30-step SD1.5 image's 2.3 s). Reads the run's summary.json; loads nothing."""
    check_result_name(name)
    from .series import GPU_IMAGE_S, read_summary, series_overhead

    run_dir = Path(run_dir)
    result = series_overhead(read_summary(run_dir), gpu_image_s=GPU_IMAGE_S if gpu_image_s is None else gpu_image_s)
    result["run_dir"] = str(run_dir)
    save_result(result, out_dir, name or _name(f"series-{run_dir.resolve().name}"))
    return result
