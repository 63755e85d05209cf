"""Re-fit the cosine → same-person probability mapping (identity/calibration.py) on labelled photos.

    python -m castkeep.benchmarks.calibrate FACES_DIR/lfw_gallery [--models PACK] [--json]

The folder holds one sub-folder per identity. Every photo is embedded (largest face), all
same-identity pairs are genuine and all cross-identity pairs impostors; the fit weights both classes
equally. Paste the printed PLATT_SLOPE into identity/calibration.py (and CALIBRATION_INFO).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from ..errors import CastkeepError
from ..identity import calibration, similarity
from ..utils import IMAGE_SUFFIXES


def embed_folder(folder: Path, models: str | None, device: str = "cpu",
                 cache: Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(embeddings N x d, identity label per row, file names, fingerprint) for every photo with a face."""
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return data["embeddings"], data["labels"], list(data["files"]), str(data["fingerprint"])
    from ..identity.analyzer import FaceAnalyzer
    from ..utils import progress

    analyzer = FaceAnalyzer.from_pretrained(models, device=device, dense=False, landmarks_106=False)
    files = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    embeddings, labels, names = [], [], []
    for path in progress(files, label="embedding"):
        try:
            face = analyzer.embed(path)
        except CastkeepError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        embeddings.append(face.embedding)
        labels.append(path.parent.name)
        names.append(f"{path.parent.name}/{path.name}")
    result = (np.stack(embeddings).astype(np.float32), np.array(labels), names, analyzer.fingerprint)
    if cache is not None:
        np.savez(cache, embeddings=result[0], labels=result[1], files=np.array(names),
                 fingerprint=np.array(result[3]))
    return result


def pair_cosines(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and same/different label for every unordered pair of rows."""
    normed = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = normed @ normed.T
    upper = np.triu_indices(len(labels), k=1)
    same = (labels[:, None] == labels[None, :])[upper]
    return sims[upper].astype(np.float64), same.astype(np.float64)


def calibrate(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    cosines, same = pair_cosines(embeddings, labels)
    threshold = similarity.SAME_PERSON_THRESHOLD
    held = calibration.fit_platt(cosines, same, midpoint=threshold)
    free = calibration.fit_platt(cosines, same)
    predicted = cosines >= threshold
    accuracy = 0.5 * (predicted[same > 0].mean() + (~predicted[same == 0]).mean())
    return {
        "images": int(len(labels)), "identities": int(len(set(labels.tolist()))),
        "genuine_pairs": int(same.sum()), "impostor_pairs": int(len(same) - same.sum()),
        "threshold": threshold, "slope": round(held.slope, 4), "log_loss": round(held.log_loss, 5),
        "free_fit": {"slope": round(free.slope, 4), "intercept": round(free.intercept, 4),
                     "midpoint": round(free.midpoint, 4), "log_loss": round(free.log_loss, 5)},
        "balanced_accuracy_at_threshold": round(float(accuracy), 4),
        "genuine_cosine_mean": round(float(cosines[same > 0].mean()), 4),
        "impostor_cosine_mean": round(float(cosines[same == 0].mean()), 4),
    }


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--models", default=None, envvar="CASTKEEP_MODELS", help="Model pack name or folder.")
@click.option("--device", default="cpu", show_default=True, help="onnxruntime device.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="An .npz to keep the embeddings in (reused when it exists).")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
def main(folder: Path, models: str | None, device: str, cache: Path | None, as_json: bool) -> None:
    """Fit P(same person | cosine) on the identity folders under FOLDER."""
    embeddings, labels, _, fingerprint = embed_folder(folder, models, device, cache)
    result = {"folder": folder.name, "fingerprint": fingerprint, **calibrate(embeddings, labels)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            click.echo(f"{key}: {value}")
        click.echo(f"\nPLATT_SLOPE = {result['slope']}")


if __name__ == "__main__":
    main()
