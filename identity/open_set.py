"""Open-set identification: the verdict threshold that keeps a 1:N search's false-positive identification
rate (FPIR: the share of searches by people who are *not* enrolled that still name someone) at a stated
target for a store of N characters.

Why the 1:1 threshold is not enough: a search compares the probe with every character, and each impostor
comparison is another chance of a false match. With N comparisons that are independent, FPIR(t) =
1 - (1 - FMR(t))^N, so a search at FPIR f needs a per-comparison false-match rate FMR = 1 - (1 - f)^(1/N)
(`per_comparison_fmr`): 1 % at N = 1, 5.3e-5 at N = 188, 1.0e-6 at N = 10,000. The threshold is the score
where the impostor tail reaches that rate; it is never below the scorer's 1:1 threshold (`open_set_threshold`).

The impostor tail (`ImpostorTail`): a generalised Pareto distribution (GPD, the limit law of exceedances
over a high threshold) fitted by maximum likelihood to the top 1 % of impostor similarities, where a
similarity is the scorer's score with "higher = more alike" (cosine, minus the dlib distance, the fused
log-odds). Fitted on ../shared/faces/lfw_gallery (139 people x 6 photos): every photo against the
character of every *other* person, characters built as the store builds them (mean of 1-5 reference
photos, two random draws per size, equal weights; dlib scores them as `CharacterDescriptors` does:
1,150,920 comparisons). Measured there (ArcFace):
- the tail is heavier than a Gaussian: FMR 1e-4 lies at cosine 0.34, a Gaussian fitted to all impostors
  says 0.27; the GPD's shape is positive (0.057); an exponential tail (shape 0) fits the first decades
  but gives a third of the empirical FMR at cosine 0.40, so the GPD is kept;
- independence holds in the mean: random 100-character galleries accept 5.4 % of unknown probes at the
  1:1 threshold, 1 - (1 - FMR(0.27))^100 predicts 5.4 %.
Held out (../shared/faces/lfw_pairs_fold1, no person in common with the gallery; `castkeep bench identify`
and benchmarks/open_set_fit.py): the gallery's tail is the heavier of the two (FMR at cosine 0.30: 2.4e-4
on the gallery, 5.7e-5 on fold 1), so on fold 1 the target is met with room to spare: random galleries
of 30-300 fold-1 characters accept 0.1-0.2 % of outsiders at the open-set threshold (0.5-5.1 % at
0.27), and `bench identify` with 348 enrolled accepts 0 of 166 (9 of 166 at 0.27) at equal DIR (100 %).
Other photo populations may sit anywhere between; refit on your own photos for an exact rate.

dlib and the fusion only re-rank ArcFace's shortlist in a store search (identity/store_scoring.py); the
best of a shortlist never beats the best of all N comparisons, so their thresholds here bound FPIR from
above. dlib compares a face with a character on the photo-pair scale its calibration was fitted on
(identity/reference_faces.py `CharacterDescriptors`), so 1 % of impostor characters are nearer than 0.619,
next to the 1:1 threshold 0.623 (the distance to the mean descriptor, used before, put that 1 % at 0.569).
Held out (fold 1, 200 random galleries per size, each person's first 2 photos as references), FPIR / DIR
at the open-set threshold: dlib 0.9 % / 96 % for 10 characters (0.545), 0.7 % / 66 % for 100 (0.474),
0.5 % / 59 % for 188 (0.456); at 0.623 FPIR is 10 % / 54 % / 70 % (distance to the mean: 17 % / 73 % / 86 %).
Fused: 0.35 % / 100 % at N = 10 (log-odds 0.33), 0.1 % / 100 % at N = 188 (2.87). dlib alone pays for the
open-set target, keeping 59 % of genuine matches at N = 188 (ArcFace and fused: 100 %).
The generated domain has 367 impostor pairs (generated_dev), far too few for a 1e-4 tail: there
`open_set_threshold` returns the 1:1 threshold with `fitted` False, and FPIR grows with N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CastkeepError

DEFAULT_FPIR = 0.01


@dataclass(frozen=True)
class ImpostorTail:
    """FMR(s) = anchor_fmr * (1 + shape * (s - anchor) / scale) ** (-1 / shape) for similarities s >= anchor
    (exponential when shape = 0): the upper tail of one scorer's impostor similarities in one domain."""

    anchor: float      # the similarity exceeded by `anchor_fmr` of impostor comparisons
    anchor_fmr: float
    scale: float
    shape: float

    def fmr(self, similarity: float) -> float:
        """The false-match rate at a similarity; `anchor_fmr` below the anchor (the tail says no more)."""
        excess = max(float(similarity) - self.anchor, 0.0)
        if abs(self.shape) < 1e-9:
            return self.anchor_fmr * math.exp(-excess / self.scale)
        base = 1.0 + self.shape * excess / self.scale
        return 0.0 if base <= 0 else self.anchor_fmr * base ** (-1.0 / self.shape)

    def similarity_at(self, fmr: float) -> float:
        """The similarity that impostors exceed at rate `fmr` (the anchor for rates at or above its own)."""
        if fmr >= self.anchor_fmr:
            return self.anchor
        ratio = self.anchor_fmr / fmr
        if abs(self.shape) < 1e-9:
            return self.anchor + self.scale * math.log(ratio)
        return self.anchor + self.scale / self.shape * (ratio ** self.shape - 1.0)


# Fitted by `python -m castkeep.benchmarks.open_set_fit ../shared/faces/lfw_gallery --cache lfw_gallery.npz`
# (buffalo_s_lite ArcFace, dlib 20.0 descriptors; it prints this table). Keys: (scorer, domain).
IMPOSTOR_TAILS: dict[tuple[str, str], ImpostorTail] = {
    ("arcface", "photo"): ImpostorTail(anchor=0.178367, anchor_fmr=0.01, scale=0.029882, shape=0.057109),
    ("dlib", "photo"): ImpostorTail(anchor=-0.619170, anchor_fmr=0.01, scale=0.033454, shape=-0.026287),
    ("fused", "photo"): ImpostorTail(anchor=-1.531611, anchor_fmr=0.01, scale=0.786359, shape=0.025856),
}


def per_comparison_fmr(fpir: float, characters: int) -> float:
    """The false-match rate per comparison that gives FPIR `fpir` over `characters` independent comparisons."""
    if not 0.0 < fpir < 1.0:
        raise CastkeepError(f"target FPIR must be between 0 and 1 (exclusive), got {fpir}")
    return -math.expm1(math.log1p(-fpir) / max(int(characters), 1))


@dataclass(frozen=True)
class OpenSetThreshold:
    """The verdict threshold of a 1:N search, on the scorer's own scale (a distance for dlib)."""

    threshold: float
    target_fpir: float
    characters: int
    one_to_one_threshold: float
    fitted: bool  # False: no impostor tail for this scorer and domain, so the 1:1 threshold

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": round(self.threshold, 4), "target_fpir": self.target_fpir,
                "characters": self.characters, "one_to_one_threshold": round(self.one_to_one_threshold, 4),
                "fitted": self.fitted}


def open_set_threshold(scorer: Any, domain: str, characters: int,
                       fpir: float = DEFAULT_FPIR) -> OpenSetThreshold:
    """The threshold at which a search of `characters` stored characters by `scorer` (a name or Scorer) in
    `domain` accepts a non-enrolled face with probability about `fpir`; never laxer than the 1:1 threshold."""
    from .scorers import get_scorer

    scorer = get_scorer(scorer)
    calibration = scorer.calibration(domain)
    one_to_one = float(calibration.threshold)
    tail = IMPOSTOR_TAILS.get((scorer.name, domain))
    fmr = per_comparison_fmr(fpir, characters)  # validates fpir in every case
    if tail is None:
        return OpenSetThreshold(one_to_one, fpir, int(characters), one_to_one, fitted=False)
    sign = 1.0 if calibration.higher_is_same else -1.0  # the tail is on the "higher = more alike" scale
    similarity = max(tail.similarity_at(fmr), sign * one_to_one)
    return OpenSetThreshold(sign * similarity, fpir, int(characters), one_to_one, fitted=True)


def fit_tail(similarities: np.ndarray, anchor_fmr: float = 0.01) -> ImpostorTail:
    """Maximum-likelihood GPD fit to the impostor similarities above their (1 - anchor_fmr) quantile.

    The likelihood is profiled over theta = shape / scale (Grimshaw 1993): for a given theta the shape is
    mean(log1p(theta * y)) and the scale shape / theta, so one dimension is searched (a grid, then golden
    section), not two.
    """
    values = np.asarray(similarities, dtype=np.float64)
    values = values[np.isfinite(values)]
    anchor = float(np.quantile(values, 1.0 - anchor_fmr))
    excess = values[values > anchor] - anchor
    if len(excess) < 50:
        raise ValueError(f"only {len(excess)} impostor scores above the anchor: too few to fit a tail")
    mean, top = float(excess.mean()), float(excess.max())

    def shape_of(theta: float) -> float:
        return float(np.log1p(theta * excess).mean())

    def log_likelihood(theta: float) -> float:  # per exceedance
        if abs(theta) < 1e-12 / mean:
            return -(math.log(mean) + 1.0)
        shape = shape_of(theta)
        return -(math.log(shape / theta) + shape + 1.0)

    grid = np.concatenate([np.linspace(-0.999 / top, 0.0, 400, endpoint=False), np.geomspace(1e-6, 1e3, 1200) / mean])
    values_at = np.array([log_likelihood(t) for t in grid])
    best = int(values_at.argmax())
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(100):  # golden section inside the bracket around the grid's best point
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if log_likelihood(a) >= log_likelihood(b):
            hi = b
        else:
            lo = a
    theta = 0.5 * (lo + hi)
    if abs(theta) < 1e-12 / mean:
        return ImpostorTail(anchor=anchor, anchor_fmr=anchor_fmr, scale=mean, shape=0.0)
    shape = shape_of(theta)
    return ImpostorTail(anchor=anchor, anchor_fmr=anchor_fmr, scale=float(shape / theta), shape=shape)
