"""1:N identification through the real character store.

Protocol (a gallery folder laid out `<identity>/<photo>`):
- a seeded share of the identities (`unknown_fraction`) is held out entirely: their photos are
  open-set probes of people who are not enrolled;
- every other identity is registered in a fresh store (`Store.open(tmp, create=True)` + `register`) from its
  first `k` photos (sorted by file name); its remaining photos are closed-set probes;
- each probe is embedded once, then `store.identify(embedding, k=5)` ranks the characters.

Reported: rank-1 / rank-5 identification rate over the enrolled people's probes (a probe with no
face found counts as a miss, and is listed); open-set at the store's same-person threshold, as
in NIST FRVT 1:N: FPIR (share of non-enrolled probes whose best match still reaches the threshold),
its complement the rejection rate, and DIR / FNIR (enrolled probes that are both ranked first and
above the threshold, or not); DIR at FPIR = 1 % (a threshold chosen on these very probes: an oracle);
FPIR and DIR at the product's own open-set threshold for the enrolled gallery's size and target FPIR
(identity/open_set.py, fitted once on lfw_gallery, never on the run) next to the 1:1 threshold's;
per-probe latency split into embedding and search.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkInputError, CastkeepError
from ..identity.open_set import DEFAULT_FPIR, open_set_threshold
from ..identity.similarity import SAME_PERSON_THRESHOLD
from ..utils import IMAGE_SUFFIXES, Progress, no_progress


def read_gallery(folder: str | os.PathLike, *, limit_identities: int | None = None) -> dict[str, list[Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkInputError("gallery is not a folder", path=folder)
    gallery = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if photos:
            gallery[sub.name] = photos
    if limit_identities:
        gallery = dict(list(gallery.items())[:limit_identities])
    if len(gallery) < 2:
        raise BenchmarkInputError("a gallery needs at least 2 identity folders (<identity>/<photo>)", path=folder)
    return gallery


def split_gallery(gallery: dict[str, list[Path]], k: int, unknown_fraction: float, seed: int
                  ) -> tuple[dict[str, list[Path]], list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(enrolment photos per identity, known probes, unknown probes)."""
    names = sorted(gallery)
    rng = np.random.default_rng(seed)
    n_unknown = int(round(unknown_fraction * len(names)))
    n_unknown = min(n_unknown, len(names) - 1)
    unknown = set(rng.permutation(names)[:n_unknown].tolist()) if n_unknown else set()
    enrol, known_probes, unknown_probes = {}, [], []
    for name in names:
        photos = gallery[name]
        if name in unknown:
            unknown_probes += [(name, p) for p in photos]
        elif len(photos) > k:
            enrol[name] = photos[:k]
            known_probes += [(name, p) for p in photos[k:]]
        else:
            enrol[name] = photos  # too few to probe: still enrolled, as a distractor
    if not enrol:
        raise BenchmarkInputError("no identity left to enrol")
    if not known_probes:
        raise BenchmarkInputError(f"no identity has more than k={k} photos, so nothing to query")
    return enrol, known_probes, unknown_probes


def _enrol(store: Any, enrol: dict[str, list[Path]], progress: Progress) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Register everyone as a user would; a photo set the store refuses is retried with force
    (quality/impostor gates), then with force and face 0 (the subject under the analyzer's face
    selection, for photos with two similar faces). Every retry is noted; an identity that still
    fails is not enrolled and its probes count as misses."""
    stored_names: dict[str, str] = {}
    problems = []
    attempts: tuple[tuple[str, dict[str, Any]], ...] = (
        ("as given", {}), ("force", {"force": True}), ("force + face 0", {"force": True, "face": 0}))
    for identity in progress(list(enrol), label="enrol", total=len(enrol)):
        photos = enrol[identity]
        first_problem = None
        for how, options in attempts:
            try:
                character = store.register(identity, photos, **options)
            except CastkeepError as exc:
                first_problem = first_problem or str(exc)
                continue
            if how != "as given":
                problems.append({"identity": identity, "problem": first_problem, "enrolled_with": how})
            stored_names[character.name] = identity
            break
        else:
            problems.append({"identity": identity, "problem": first_problem, "enrolled_with": None})
    return stored_names, problems


def _latency(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "mean_ms": None}
    ms = np.asarray(values) * 1e3
    return {"p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean())}


def _dir_at_fpir(known_top: list[tuple[bool, float]], unknown_top: list[float], fpir: float) -> dict[str, Any]:
    """DIR at the lowest threshold whose FPIR on the non-enrolled probes is <= `fpir`."""
    if not unknown_top:
        return {"fpir": fpir, "dir": None, "threshold": None, "resolved": False}
    scores = np.sort(np.asarray(unknown_top))[::-1]
    allowed = int(np.floor(fpir * len(scores)))  # this many impostor probes may pass
    threshold = float(np.nextafter(scores[allowed], np.inf)) if allowed < len(scores) else float(scores[-1])
    hits = [correct and score >= threshold for correct, score in known_top]
    return {"fpir": fpir, "dir": float(np.mean(hits)) if hits else None, "threshold": threshold,
            "resolved": fpir >= 1.0 / len(scores)}


def _rates_at(threshold: float, known_top: list[tuple[bool, float]], unknown_top: list[float]) -> dict[str, Any]:
    """DIR / FNIR over the enrolled people's probes and FPIR / rejection over the others, at one threshold."""
    dir_rate = float(np.mean([c and s >= threshold for c, s in known_top]))
    fpir = float(np.mean([s >= threshold for s in unknown_top])) if unknown_top else None
    return {"threshold": threshold, "dir": dir_rate, "fnir": 1.0 - dir_rate, "fpir": fpir,
            "rejection_rate": None if fpir is None else 1.0 - fpir}


def run_identification(gallery: dict[str, list[Path]], analyzer: Any, *, k: int = 2,
                       unknown_fraction: float = 0.2, seed: int = 0, threshold: float = SAME_PERSON_THRESHOLD,
                       target_fpir: float = DEFAULT_FPIR, store_dir: str | None = None,
                       progress: Progress = no_progress) -> dict[str, Any]:
    from ..identity.store import Store

    enrol, known_probes, unknown_probes = split_gallery(gallery, k, unknown_fraction, seed)
    with tempfile.TemporaryDirectory(prefix="castkeep-bench-store-", dir=store_dir) as tmp:
        with Store.open(Path(tmp) / "store", analyzer=analyzer, create=True) as store:
            start = time.perf_counter()
            stored_names, enrol_problems = _enrol(store, enrol, progress)
            enrol_seconds = time.perf_counter() - start
            embed_times, search_times = [], []
            known_top: list[tuple[bool, float]] = []
            ranks: list[int | None] = []
            no_face: list[str] = []
            unknown_top: list[float] = []
            probes = [(name, path, True) for name, path in known_probes] + \
                     [(name, path, False) for name, path in unknown_probes]
            for name, path, enrolled in progress(probes, label="probes", total=len(probes)):
                t0 = time.perf_counter()
                try:
                    vector = analyzer.embed(path).embedding
                except CastkeepError:
                    no_face.append(str(path))
                    if enrolled:
                        ranks.append(None)
                        known_top.append((False, -1.0))
                    continue
                t1 = time.perf_counter()
                matches = store.identify(vector, k=5)
                t2 = time.perf_counter()
                embed_times.append(t1 - t0)
                search_times.append(t2 - t1)
                best = matches[0].score if matches else -1.0
                found = [stored_names.get(m.name) for m in matches]
                if enrolled:
                    rank = found.index(name) + 1 if name in found else None
                    ranks.append(rank)
                    known_top.append((rank == 1, best))
                else:
                    unknown_top.append(best)
            characters = len(store)

    n_known = len(ranks)
    rank1 = sum(1 for r in ranks if r == 1) / n_known
    rank5 = sum(1 for r in ranks if r is not None and r <= 5) / n_known
    product = open_set_threshold("arcface", "photo", characters, target_fpir)
    return {
        "bench": "identify",
        "identities": len(gallery),
        "enrolled": characters,
        "refs_per_identity": k,
        "unknown_identities": len({n for n, _ in unknown_probes}),
        "seed": seed,
        "known_probes": n_known,
        "unknown_probes": len(unknown_probes),
        "model": analyzer.fingerprint,
        "rank1": rank1,
        "rank5": rank5,
        "open_set": {
            **_rates_at(threshold, known_top, unknown_top),
            "dir_at_fpir_1e-2": _dir_at_fpir(known_top, unknown_top, 1e-2),
            # What `identify` itself does: the threshold for this many characters at the target FPIR.
            "product": {**_rates_at(product.threshold, known_top, unknown_top), "target_fpir": target_fpir,
                        "characters": characters, "fitted": product.fitted},
            "one_to_one": _rates_at(product.one_to_one_threshold, known_top, unknown_top),
        },
        "failures_to_detect": {"probes": len(no_face), "files": no_face},
        "enrolment_problems": enrol_problems,
        "not_enrolled": [p["identity"] for p in enrol_problems if p["enrolled_with"] is None],
        "enrol_seconds": enrol_seconds,
        "latency": {"embed": _latency(embed_times), "search": _latency(search_times),
                    "total": _latency([a + b for a, b in zip(embed_times, search_times, strict=True)])},
    }


def summary_text(result: dict[str, Any]) -> str:
    from .report import percent, table

    open_set = result["open_set"]
    rows = [["rank-1", percent(result["rank1"])], ["rank-5", percent(result["rank5"])],
            [f"DIR @ threshold {open_set['threshold']:.2f}", percent(open_set["dir"])],
            ["FPIR (unknown accepted)", percent(open_set["fpir"])],
            ["open-set rejection rate", percent(open_set["rejection_rate"])],
            ["DIR @ FPIR 1 % (oracle threshold)", percent(open_set["dir_at_fpir_1e-2"]["dir"])]]
    if "product" in open_set:
        product, one = open_set["product"], open_set["one_to_one"]
        target = f"target FPIR {product['target_fpir']:.0%}, {product['characters']} characters"
        rows += [[f"FPIR / DIR @ 1:1 threshold {one['threshold']:.3f}", f"{percent(one['fpir'])} / {percent(one['dir'])}"],
                 [f"FPIR / DIR @ open-set threshold {product['threshold']:.3f} ({target})",
                  f"{percent(product['fpir'])} / {percent(product['dir'])}"]]
    lat = result["latency"]
    rows += [[f"latency {part} p50 / p95 ms",
              f"{lat[part]['p50_ms']:.1f} / {lat[part]['p95_ms']:.1f}" if lat[part]["p50_ms"] is not None else "-"]
             for part in ("embed", "search", "total")]
    head = (f"identification: {result['enrolled']} enrolled ({result['refs_per_identity']} refs each), "
            f"{result['known_probes']} enrolled-person probes, {result['unknown_probes']} probes of "
            f"{result['unknown_identities']} non-enrolled people")
    lines = [head, table(rows, ["metric", "value"])]
    if result["failures_to_detect"]["probes"]:
        lines.append(f"no face found in {result['failures_to_detect']['probes']} probe(s) (counted as misses)")
    if result["enrolment_problems"]:
        retried = {p["identity"]: p["enrolled_with"] for p in result["enrolment_problems"]}
        lines.append(f"{len(retried)} identity(ies) the store refused as given: "
                     + ", ".join(f"{k} ({v or 'not enrolled'})" for k, v in retried.items()))
    return "\n".join(lines)
