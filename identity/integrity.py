"""`verify`: is the store whole? SQLite's own checks, every row decodes and agrees with the store's
model, every character vector (in every embedding space) is the one its references give, the
primary space agrees with the version-1 columns, stored face crops are PNGs of the right size, and
the index cache is current."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CastkeepError, StoreError
from . import rows
from .backend import StoreDatabase
from .characters import Character, Space
from .crops import FaceCrop
from .enrolment import MAX_REFERENCES
from .fields import UNIT_TOLERANCE
from .index_cache import SearchIndex, checked_kind
from .names import name_key


def character_problems(characters: list[Character], fingerprint: str | None, dim: int | None = None) -> list[str]:
    """What is wrong with the stored characters (names, models, embedding sizes, references, vectors)."""
    problems: list[str] = []
    keys: set[str] = set()
    for character in characters:
        label = f"character '{character.name}'"
        try:
            key = name_key(character.name)
        except CastkeepError:
            problems.append(f"{label}: invalid name")
            key = character.name
        if key in keys:
            problems.append(f"{label}: duplicate name")
        keys.add(key)
        if fingerprint is not None and character.fingerprint != fingerprint:
            problems.append(f"{label}: model '{character.fingerprint}' differs from the store's")
        elif dim is not None and character.vector.size != dim:
            problems.append(f"{label}: {character.vector.size}-value vector; the store's model gives {dim} values")
        if not character.references:
            problems.append(f"{label}: has no references")
            continue
        if len(character.references) > MAX_REFERENCES:
            problems.append(f"{label}: {len(character.references)} references (at most {MAX_REFERENCES})")
        if any(r.fingerprint != character.fingerprint for r in character.references):
            problems.append(f"{label}: references from another model")
        if character.fingerprint not in character.spaces:
            problems.append(f"{label}: has no vector in its own model's space")
            continue
        if any(r.embeddings.get(r.fingerprint) is None or not np.array_equal(r.embeddings[r.fingerprint], r.embedding)
               for r in character.references):
            problems.append(f"{label}: a reference's embedding differs from its copy in ref_embeddings")
        if not np.array_equal(character.spaces[character.fingerprint].vector, character.vector):
            problems.append(f"{label}: vector differs from its copy in character_vectors")
        for space in character.spaces.values():
            problems += [f"{label}: {p}" for p in space_problems(character, space)]
    return problems


def space_problems(character: Character, space: Space) -> list[str]:
    """What is wrong with one space of a character: sizes, unit length, agreement with its references."""
    where = "" if space.fingerprint == character.fingerprint else f" in space {space.fingerprint}"
    embedded = [r for r in character.references if space.fingerprint in r.embeddings]
    if not embedded:
        return [f"vector{where} has no reference embedded in its space"]
    embeddings = [r.embeddings[space.fingerprint] for r in embedded]
    if any(e.shape != space.vector.shape or not np.all(np.isfinite(e)) for e in embeddings):
        return [f"a reference embedding{where} is malformed"]
    if any(abs(float(np.linalg.norm(e)) - 1) > UNIT_TOLERANCE for e in embeddings):
        return [f"a reference embedding{where} is not unit length"]
    norm = float(np.linalg.norm(space.vector))
    if not np.isfinite(norm) or abs(norm - 1) > 1e-3:
        return [f"vector{where} is not unit length"]
    expected = Space.fit(space.fingerprint, np.stack(embeddings), np.array([r.quality for r in embedded]))
    if float(np.dot(expected.vector, space.vector)) < 1 - 1e-4:
        return [f"vector{where} does not match its references"]
    return []


def crop_problems(headers: Sequence[tuple[int, bytes, str | None]]) -> list[str]:
    """Stored face crops that are not PNGs of the crop size, or lack their keypoints."""
    problems = []
    for ref_id, head, kps in headers:
        try:
            if kps is None:
                raise CastkeepError("face crop without its keypoints")
            FaceCrop.from_stored(head, json.loads(kps))
        except (TypeError, ValueError, RecursionError):
            problems.append(f"reference {ref_id}: face crop keypoints are not valid JSON")
        except CastkeepError as exc:
            problems.append(f"reference {ref_id}: {exc}")
    return problems


def verify(db: StoreDatabase, cache: SearchIndex, location: str, *, repair_index: bool = True) -> dict[str, Any]:
    """The integrity report of a store; with `repair_index`, a stale or corrupt index is rebuilt
    (only when the database itself is sound: an index is never built from damaged rows)."""
    problems: list[str] = []
    with db.guard():
        problems += db.integrity_problems()
        damaged: list[str] = []
        characters = rows.read_characters(db, damaged=damaged)
        generation = db.generation()
        fingerprint = db.meta("fingerprint")
        recorded_kind = db.meta("index_kind")
        stored_ids = rows.character_ids(db)
        dim = None if fingerprint is None else rows.stored_dim(db, fingerprint)
        ref_count = rows.count_references(db)
        crop_headers = rows.crop_headers(db)
    problems += damaged
    if generation < 0:
        problems.append("the store's change counter (meta 'generation') is damaged: the next change repairs it")
    if fingerprint is None and (characters or damaged):
        problems.append("the store's model fingerprint (meta 'fingerprint') is missing, though it holds characters")
    problems += character_problems(characters, fingerprint, dim)
    problems += crop_problems(crop_headers)
    try:
        index_report: dict[str, Any] = {"kind": checked_kind(recorded_kind)}
    except StoreError as exc:
        problems.append(str(exc))
        return _report(location, characters, ref_count, generation, fingerprint,
                       {"kind": recorded_kind, "state": "unknown kind"}, problems)
    _, state = cache.load_file(generation)
    index_report["state"] = state
    if state != "current" and repair_index and not problems:
        index_report.update(cache.rebuild())
        index_report["rebuilt"] = True
    elif state == "current":
        ids = set(cache.current().ids().tolist())
        if ids != stored_ids:
            index_report["state"] = "mismatch"
            if repair_index and not problems:  # never built from damaged rows
                index_report.update(cache.rebuild())
                index_report["rebuilt"] = True
    return _report(location, characters, ref_count, generation, fingerprint, index_report, problems)


def _report(location: str, characters: list[Character], ref_count: int, generation: int, fingerprint: str | None,
            index_report: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    return {"ok": not problems, "store": location, "characters": len(characters),
            "references": ref_count, "generation": generation, "fingerprint": fingerprint,
            "index": index_report, "problems": problems}
