"""Re-fit each scorer's threshold and P(same) for a domain (the constants in identity/domains.py).

    python -m castkeep.benchmarks.calibrate FACES_DIR/lfw_gallery [--scorer all] [--json]
    python -m castkeep.benchmarks.calibrate --domain generated --pairs FACES_DIR/generated_dev/pairs.txt

`--domain photo` (the default) reads a folder with one sub-folder per identity: every same-identity pair
is genuine and every cross-identity pair an impostor. `--domain generated` reads a pairs file (`a b same`)
and the `manifest.tsv` beside it (identity and style of each image; without one, an image's identity is
its folder's name). Every image is described once (largest face, no flip: what `compare` and the store
use) by ArcFace and, for `dlib`/`fused`/`all`, by dlib; `--cache FILE.npz` keeps those descriptions.

Each scorer's P(same) is a class-balanced logistic fit on its score and its threshold is that fit's midpoint
(P = 0.5); the photo domain keeps ArcFace's published 0.27 / 22.3. The fused scorer is a logistic
regression on ArcFace's and dlib's calibrated log-odds. With identities known (always for `--domain generated`), the report adds
leave-identities-out cross-validation per style: each pair judged by a calibration fitted only on pairs
that share no identity with it.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import BenchmarkInputError, CastkeepError
from ..identity import domains
from ..utils import IMAGE_SUFFIXES
from .domain_fit import LabelledPairs, fit_domain, fit_report, usable

RECOGNISERS = ("arcface", "dlib")


# ------------------------------------------------------------------------------------------ describing images
@dataclass
class Described:
    """Each image's ArcFace embedding and dlib descriptor (None where no face was found)."""

    paths: list[str]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    descriptors: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprint: str = ""


def describe_images(paths: list[Path], *, models: str | None = None, device: str = "cpu", dlib: bool = True,
                    cache: Path | None = None, analyzer: Any = None, recogniser: Any = None) -> Described:
    """Describe every image (largest face). `cache` (.npz) is read first and rewritten with what is new."""
    from ..utils import progress

    keys = [str(p) for p in paths]
    result = Described(paths=keys)
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        for key, emb, desc, found in zip(data["paths"], data["embeddings"], data["descriptors"], data["found"],
                                         strict=True):
            if found:
                result.embeddings[str(key)] = emb
                if np.isfinite(desc).all():
                    result.descriptors[str(key)] = desc
        result.fingerprint = str(data["fingerprint"])
        known = {str(k) for k in data["paths"]}
    else:
        known = set()
    todo = [p for p in paths if str(p) not in known or (dlib and str(p) in result.embeddings
                                                          and str(p) not in result.descriptors)]
    if not todo:
        return result
    if analyzer is None:
        from ..identity.analyzer import FaceAnalyzer

        analyzer = FaceAnalyzer.from_pretrained(models, device=device, dense=False, landmarks_106=False)
    if dlib and recogniser is None:
        from ..identity.dlib_recogniser import DlibRecogniser

        recogniser = DlibRecogniser()
    from ..landmarks.images import load_image

    result.fingerprint = analyzer.fingerprint
    for path in progress(todo, label="describing", total=len(todo)):
        try:
            image = load_image(path)
            face = analyzer.embed(image)
        except CastkeepError as exc:
            print(f"skipped: {path}: {exc}", file=sys.stderr)
            known.add(str(path))
            continue
        known.add(str(path))
        result.embeddings[str(path)] = face.embedding
        if dlib:
            result.descriptors[str(path)] = recogniser.describe(image, [face.bbox])[0]
    if cache is not None:
        ordered = sorted(known)
        np.savez(cache, paths=np.array(ordered), found=np.array([k in result.embeddings for k in ordered]),
                 embeddings=np.stack([result.embeddings.get(k, np.full(512, np.nan, np.float32)) for k in ordered]),
                 descriptors=np.stack([result.descriptors.get(k, np.full(128, np.nan, np.float32))
                                       for k in ordered]),
                 fingerprint=np.array(result.fingerprint))
    return result


# ------------------------------------------------------------------------------------------ pairs
def raw_pair_scores(described: Described, a: list[str], b: list[str]) -> dict[str, np.ndarray]:
    """ArcFace cosine and dlib Euclidean distance of every pair (NaN where either face is missing)."""
    raw: dict[str, np.ndarray] = {}
    for name, table in (("arcface", described.embeddings), ("dlib", described.descriptors)):
        if not table:
            continue
        values = np.full(len(a), np.nan)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x in table and y in table:
                u, v = table[x].astype(np.float64), table[y].astype(np.float64)
                values[i] = (u @ v / (np.linalg.norm(u) * np.linalg.norm(v)) if name == "arcface"
                             else np.linalg.norm(u - v))
        raw[name] = values
    return raw


def folder_pairs(folder: Path) -> tuple[list[Path], list[tuple[int, int]], list[str]]:
    """Images under FOLDER/<identity>/, every unordered pair of them, and each image's identity."""
    files = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BenchmarkInputError("no images in identity sub-folders", path=folder)
    upper = np.triu_indices(len(files), k=1)
    return files, list(zip(upper[0].tolist(), upper[1].tolist(), strict=True)), [p.parent.name for p in files]


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    """generated_dev's manifest.tsv: relative path → its row (identity, kind, style, ...)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle, delimiter="\t")}


def generated_pairs(pairs_file: Path, manifest: Path | None = None) -> tuple[list[Path], LabelledPairs]:
    """The pairs of a pairs file, each with its identities and the style of its generated image."""
    from .pairs import read_pairs

    pairs = read_pairs(pairs_file)
    manifest = manifest if manifest is not None else pairs_file.parent / "manifest.tsv"
    rows = read_manifest(manifest) if manifest.is_file() else {}

    def info(path: Path) -> tuple[str, str]:
        row = rows.get(path.relative_to(pairs.root).as_posix()) if path.is_relative_to(pairs.root) else None
        return (row["identity"], row["style"]) if row else (path.parent.name, "all")

    a = [str(p.a) for p in pairs.pairs]
    b = [str(p.b) for p in pairs.pairs]
    identities = [frozenset({info(p.a)[0], info(p.b)[0]}) for p in pairs.pairs]
    styles = [info(p.b)[1] for p in pairs.pairs]
    same = np.array([p.same for p in pairs.pairs], dtype=bool)
    return pairs.images, LabelledPairs(a=a, b=b, same=same, identities=identities, styles=styles)


def run_calibration(pairs: LabelledPairs, *, domain: str, cross_validate: bool) -> dict[str, Any]:
    from .cross_validation import leave_identities_out

    keep = usable(pairs)
    fitted_pairs = pairs.subset(keep)
    fixed = domains.ARCFACE["photo"] if domain == "photo" else None
    fit = fit_domain(fitted_pairs.raw, fitted_pairs.same, arcface=fixed)
    result: dict[str, Any] = {
        "domain": domain, "pairs": int(len(pairs.same)), "pairs_used": int(keep.sum()),
        "genuine_pairs": int(fitted_pairs.same.sum()), "impostor_pairs": int((~fitted_pairs.same).sum()),
        "identities": len(set().union(*pairs.identities)), "fit": fit_report(fit),
    }
    if cross_validate:
        result["cross_validation"] = leave_identities_out(
            fitted_pairs, lambda raw, same: fit_domain(raw, same, arcface=fixed))
    return result


@click.command()
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--domain", type=click.Choice(["photo", "generated"]), default="photo", show_default=True)
@click.option("--pairs", "pairs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A pairs file ('a b same') instead of FOLDER; identities and styles from the manifest.tsv "
                   "beside it.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The manifest (default: manifest.tsv beside the pairs file).")
@click.option("--scorer", type=click.Choice(["arcface", "dlib", "fused", "all"]), default="all", show_default=True,
              help="arcface alone skips dlib (fast); dlib, fused and all describe every image with both.")
@click.option("--cross-validate/--no-cross-validate", default=None,
              help="Leave-identities-out cross-validation [default: on for --domain generated].")
@click.option("--models", default=None, envvar="CASTKEEP_MODELS", help="Model pack name or folder.")
@click.option("--device", default="cpu", show_default=True, help="onnxruntime device.")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An .npz keeping every image's embedding and descriptor (reused when it exists).")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
def main(folder: Path | None, domain: str, pairs_file: Path | None, manifest: Path | None, scorer: str,
         cross_validate: bool | None, models: str | None, device: str, cache: Path | None, as_json: bool) -> None:
    """Fit each scorer's threshold and P(same) for a domain, on identity folders or a pairs file."""
    if (folder is None) == (pairs_file is None):
        raise click.UsageError("give FOLDER (identity sub-folders) or --pairs FILE, not both")
    if pairs_file is not None:
        images, pairs = generated_pairs(pairs_file, manifest)
    else:
        assert folder is not None
        images, index_pairs, labels = folder_pairs(folder)
        pairs = LabelledPairs(a=[str(images[i]) for i, _ in index_pairs], b=[str(images[j]) for _, j in index_pairs],
                              same=np.array([labels[i] == labels[j] for i, j in index_pairs]),
                              identities=[frozenset({labels[i], labels[j]}) for i, j in index_pairs],
                              styles=["all"] * len(index_pairs))
    described = describe_images(images, models=models, device=device, dlib=scorer != "arcface", cache=cache)
    pairs.raw = raw_pair_scores(described, pairs.a, pairs.b)
    if scorer == "arcface":
        pairs.raw.pop("dlib", None)
    if cross_validate is None:
        cross_validate = domain == "generated"
    result = {"source": str(pairs_file or folder), "fingerprint": described.fingerprint,
              **run_calibration(pairs, domain=domain, cross_validate=cross_validate)}
    if scorer not in ("all", "fused"):
        result["fit"] = {k: v for k, v in result["fit"].items() if k == scorer}
    if as_json:
        from ..utils import dumps

        click.echo(dumps(result))
    else:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "cross_validation"}, indent=2))
        if "cross_validation" in result:
            from .cross_validation import summary_text

            click.echo(summary_text(result["cross_validation"]))


def cli() -> None:
    """Console entry: a refused input is one `error:` line and the error's exit code."""
    try:
        main(standalone_mode=False)
    except CastkeepError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    cli()
