"""Who is who in a shot of several characters: every detected face is judged against every character of
the shot, faces are assigned to characters by optimal matching of the judge's log-odds (Hungarian
algorithm), and each character is then checked where the plan put them.

A character passes when a face is assigned to them, it stands in their region, it meets the shot's
min_score, and no other character of the shot matches that face better. The flags name what went wrong:
`no face` (fewer faces than characters), `swap` (two characters in each other's regions), `outside region`,
`leakage` (the face looks more like another character of the shot than like its own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNMATCHED = -1e6  # stands in for "no face" (-inf) in the assignment's cost matrix


@dataclass
class Placement:
    """One character's outcome in a shot."""

    face: int | None  # index of the assigned face, None when no face was left for them
    in_region: bool
    better_match: str | None = None  # another character of the shot that matches this face better
    flags: list[str] = field(default_factory=list)


def assign_faces(values: np.ndarray) -> dict[int, int]:
    """Character (column) → face (row) maximising the summed log-odds; every character gets a face while
    faces remain. `values` is faces × characters (-inf where a face could not be judged)."""
    from scipy.optimize import linear_sum_assignment  # scipy comes with insightface

    if values.size == 0:
        return {}
    finite = np.where(np.isfinite(values), values, UNMATCHED)
    rows, columns = linear_sum_assignment(finite, maximize=True)
    return {int(column): int(row) for row, column in zip(rows, columns, strict=True)}


def place_characters(values: np.ndarray, names: list[str], centre_in: Callable[[int, str], bool]
                     ) -> dict[str, Placement]:
    """Each character's face, region check and flags. `centre_in(face, name)`: whether that face's centre
    lies in that character's region."""
    assignment = assign_faces(values)
    placements: dict[str, Placement] = {}
    for column, name in enumerate(names):
        face = assignment.get(column)
        if face is None:
            placements[name] = Placement(face=None, in_region=False, flags=[f"no face: {name}"])
            continue
        own = values[face, column]
        rivals = [(values[face, other], names[other]) for other in range(len(names)) if other != column]
        better = max((r for r in rivals if r[0] > own), default=None)
        placement = Placement(face=face, in_region=centre_in(face, name), better_match=None if better is None else better[1])
        if better is not None:
            placement.flags.append(f"leakage: {name}'s face looks more like {better[1]}")
        placements[name] = placement
    for name, placement in placements.items():
        if placement.face is None or placement.in_region:
            continue
        partner = next((other for other, p in placements.items() if other != name and p.face is not None
                        and centre_in(placement.face, other) and centre_in(p.face, name)), None)
        if partner is None:
            placement.flags.append(f"outside region: {name}")
        elif names.index(name) < names.index(partner):  # one flag per swapped pair
            placement.flags.append(f"swap: {name} and {partner}")
    return placements


def face_centre(bbox: Any) -> tuple[float, float]:
    left, top, right, bottom = (float(v) for v in bbox[:4])
    return (left + right) / 2, (top + bottom) / 2
