"""Fit the impostor tails behind the open-set threshold (identity/open_set.py `IMPOSTOR_TAILS`) and check
them on people the fit never saw.

    python -m castkeep.benchmarks.open_set_fit ../shared/faces/lfw_gallery --cache lfw_gallery.npz \
        [--scorer arcface|all] [--held-out ../shared/faces/lfw_pairs_fold1 --held-out-cache fold1.npz]

FOLDER holds one sub-folder of photos per person. Every photo is compared with the character of every
*other* person, each character built as the store builds it (the renormalised mean of 1-5 reference
ArcFace embeddings, `draws` random reference sets per size; for dlib the pair-scaled distance to the references,
`CharacterDescriptors`), and the top 1 %
of those impostor similarities gets a generalised Pareto fit (`open_set.fit_tail`). It prints the table
to paste into identity/open_set.py. `--held-out` (another gallery, with no person in common) then
measures FPIR at the fitted and at the 1:1 threshold for galleries of several sizes: random sets of N
characters (from each person's first 2 photos, as `bench identify` enrols them), probed by the photos of
everyone not among them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..identity import open_set
from ..identity.reference_faces import CharacterDescriptors
from ..identity.scorers import get_scorer
from .calibrate import Described, describe_images, folder_pairs


def _photos(described: Described, images: list[Path], labels: list[str], dlib: bool
            ) -> tuple[list[str], np.ndarray]:
    """The images described (with a dlib descriptor too when needed), and their people."""
    keep = [(str(p), label) for p, label in zip(images, labels, strict=True)
            if str(p) in described.embeddings and (not dlib or str(p) in described.descriptors)]
    return [k for k, _ in keep], np.array([label for _, label in keep])


def _character(described: Described, keys: list[str]) -> tuple[np.ndarray, CharacterDescriptors | None]:
    vectors = np.stack([described.embeddings[k] for k in keys]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vector = vectors.sum(axis=0)
    descriptors = (CharacterDescriptors(np.stack([described.descriptors[k] for k in keys]).astype(np.float64),
                                        np.ones(len(keys)))
                   if keys[0] in described.descriptors else None)
    return vector / np.linalg.norm(vector), descriptors


def _raw_matrices(described: Described, probes: list[str], characters: list[list[str]]) -> dict[str, np.ndarray]:
    """Probe x character ArcFace cosines and (when described) dlib distances."""
    built = [_character(described, keys) for keys in characters]
    embeddings = np.stack([described.embeddings[k] for k in probes]).astype(np.float64)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    raw = {"arcface": embeddings @ np.stack([v for v, _ in built]).T}
    references = [d for _, d in built if d is not None]
    if len(references) == len(built) and all(k in described.descriptors for k in probes):
        probe_descriptors = np.stack([described.descriptors[k] for k in probes]).astype(np.float64)
        raw["dlib"] = np.stack([character.distances(probe_descriptors) for character in references], axis=1)
    return raw


def character_impostors(described: Described, keys: list[str], people: np.ndarray, *,
                        refs: tuple[int, ...] = (1, 2, 3, 4, 5), draws: int = 2, seed: int = 0
                        ) -> dict[str, np.ndarray]:
    """Raw scores ({"arcface": cosines, "dlib": distances}) of every photo against the character of every
    other person, for characters of each size in `refs` (`draws` random reference sets each)."""
    rng = np.random.default_rng(seed)
    names = sorted(set(people.tolist()))
    rows = {name: np.flatnonzero(people == name) for name in names}
    impostor = people[:, None] != np.array(names)[None, :]
    parts: dict[str, list[np.ndarray]] = {}
    for size in refs:
        for _ in range(draws):
            characters = [[keys[i] for i in rng.choice(rows[n], min(size, len(rows[n])), replace=False)]
                          for n in names]
            for recogniser, matrix in _raw_matrices(described, keys, characters).items():
                parts.setdefault(recogniser, []).append(matrix[impostor])
    return {recogniser: np.concatenate(values) for recogniser, values in parts.items()}


def held_out_fpir(described: Described, keys: list[str], people: np.ndarray, scorer: str, domain: str, *,
                  sizes: tuple[int, ...] = (10, 30, 100, 188, 300), fpir: float = open_set.DEFAULT_FPIR,
                  trials: int = 200, refs: int = 2, seed: int = 0) -> list[dict[str, Any]]:
    """FPIR at the open-set and the 1:1 threshold for random galleries of each size (smaller than the
    number of people), probed by the photos of the people left out."""
    chosen = get_scorer(scorer)
    names = sorted(set(people.tolist()))
    characters = [[keys[i] for i in np.flatnonzero(people == n)[:refs]] for n in names]
    similarity = np.asarray(chosen.similarity(_raw_matrices(described, keys, characters), domain))
    member = people[:, None] == np.array(names)[None, :]
    sign = 1.0 if chosen.calibration(domain).higher_is_same else -1.0
    rng = np.random.default_rng(seed)
    report = []
    for size in (s for s in sizes if s < len(names)):
        threshold = open_set.open_set_threshold(chosen, domain, size, fpir)
        accepted: dict[str, list[float]] = {"open_set": [], "one_to_one": []}
        probes = 0
        for _ in range(trials):
            gallery = rng.choice(len(names), size, replace=False)
            outsiders = ~member[:, gallery].any(axis=1)
            best = similarity[np.ix_(outsiders, gallery)].max(axis=1)
            probes += int(outsiders.sum())
            for key, value in (("open_set", threshold.threshold), ("one_to_one", threshold.one_to_one_threshold)):
                accepted[key].append(float((best >= sign * value).sum()))
        report.append({"characters": size, "threshold": threshold.threshold,
                       "one_to_one_threshold": threshold.one_to_one_threshold,
                       "fpir_open_set": sum(accepted["open_set"]) / probes,
                       "fpir_one_to_one": sum(accepted["one_to_one"]) / probes,
                       "probes_per_trial": probes / trials, "trials": trials})
    return report


def _described(folder: Path, cache: Path | None, dlib: bool, models: str | None, device: str
               ) -> tuple[Described, list[Path], list[str]]:
    images, _, labels = folder_pairs(folder)
    return describe_images(images, models=models, device=device, dlib=dlib, cache=cache), images, labels


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--scorer", type=click.Choice(["arcface", "dlib", "fused", "all"]), default="arcface",
              show_default=True, help="dlib, fused and all describe every photo with dlib too (slow).")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An .npz keeping every photo's description (benchmarks/calibrate.py's format).")
@click.option("--held-out", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Another gallery, with no person in common: FPIR at the fitted thresholds there.")
@click.option("--held-out-cache", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--fpir", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=open_set.DEFAULT_FPIR,
              show_default=True, help="Target FPIR of the held-out check.")
@click.option("--models", default=None, envvar="CASTKEEP_MODELS", help="Model pack name or folder.")
@click.option("--device", default="cpu", show_default=True, help="onnxruntime device.")
def main(folder: Path, scorer: str, cache: Path | None, held_out: Path | None, held_out_cache: Path | None,
         fpir: float, models: str | None, device: str) -> None:
    """Fit each scorer's photo-domain impostor tail on FOLDER; print the table and the held-out check."""
    scorers = ["arcface", "dlib", "fused"] if scorer == "all" else [scorer]
    dlib = scorer != "arcface"
    described, images, labels = _described(folder, cache, dlib, models, device)
    keys, people = _photos(described, images, labels, dlib)
    raw = character_impostors(described, keys, people)
    tails = {name: open_set.fit_tail(np.asarray(get_scorer(name).similarity(raw, "photo"))) for name in scorers}
    click.echo(f"# {folder.name}: {len(keys)} photos, {len(set(people.tolist()))} people, "
               f"{len(raw['arcface'])} impostor comparisons, {described.fingerprint}")
    for name, tail in tails.items():
        click.echo(f'    ("{name}", "photo"): ImpostorTail(anchor={tail.anchor:.6f}, anchor_fmr={tail.anchor_fmr}, '
                   f"scale={tail.scale:.6f}, shape={tail.shape:.6f}),")
    if held_out is not None:
        described, images, labels = _described(held_out, held_out_cache, dlib, models, device)
        keys, people = _photos(described, images, labels, dlib)
        for name in scorers:
            report = held_out_fpir(described, keys, people, name, "photo", fpir=fpir)
            click.echo(json.dumps({"held_out": held_out.name, "scorer": name, "target_fpir": fpir,
                                   "table_in_use": (name, "photo") in open_set.IMPOSTOR_TAILS, "sizes": report}))


if __name__ == "__main__":
    main()
