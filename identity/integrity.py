"""`verify`: is the store whole? SQLite's own checks, every row decodes and agrees with the store's
model, every character vector is the one its references give, and the index cache is current."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CastkeepError
from . import rows
from .characters import Character
from .database import Database
from .index_cache import IndexCache
from .names import name_key
from .references import combine


def character_problems(characters: list[Character], fingerprint: str | None) -> list[str]:
    """What is wrong with the stored characters (names, models, references, vectors)."""
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
        if not character.references:
            problems.append(f"{label}: has no references")
            continue
        if any(r.fingerprint != character.fingerprint for r in character.references):
            problems.append(f"{label}: references from another model")
        if any(r.embedding.shape != character.vector.shape or not np.all(np.isfinite(r.embedding))
               for r in character.references):
            problems.append(f"{label}: a reference embedding is malformed")
            continue
        norm = float(np.linalg.norm(character.vector))
        if not np.isfinite(norm) or abs(norm - 1) > 1e-3:
            problems.append(f"{label}: vector is not unit length")
            continue
        expected = combine(np.stack([r.embedding for r in character.references]),
                           np.array([r.quality for r in character.references]))
        if float(np.dot(expected, character.vector)) < 1 - 1e-4:
            problems.append(f"{label}: vector does not match its references")
    return problems


def verify(db: Database, cache: IndexCache, folder: Path, *, repair_index: bool = True) -> dict[str, Any]:
    """The integrity report of a store; with `repair_index`, a stale or corrupt index is rebuilt
    (only when the database itself is sound: an index is never built from damaged rows)."""
    problems: list[str] = []
    with db.guard():
        integrity = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
        if integrity != ["ok"]:
            problems += [f"sqlite: {line}" for line in integrity[:10]]
        if db.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("references without a character")
        characters = rows.read_characters(db)
        generation = db.generation()
        fingerprint = db.meta("fingerprint")
        ref_count = rows.count_references(db)
    problems += character_problems(characters, fingerprint)
    index_report: dict[str, Any] = {"kind": cache.kind}
    _, state = cache.load_file(generation)
    index_report["state"] = state
    if state != "current" and repair_index and not problems:
        index_report.update(cache.rebuild())
        index_report["rebuilt"] = True
    elif state == "current":
        ids = set(cache.current().ids().tolist())
        if ids != {c.id for c in characters}:
            index_report["state"] = "mismatch"
            if repair_index:
                index_report.update(cache.rebuild())
                index_report["rebuilt"] = True
    return {"ok": not problems, "store": os.fspath(folder), "characters": len(characters),
            "references": ref_count, "generation": generation, "fingerprint": fingerprint,
            "index": index_report, "problems": problems}
