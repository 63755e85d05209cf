"""Property-based import (issue 13): hypothesis generates character files (a real export, edited field by field,
resized, rescaled, with references added, repeated or damaged, the checksum mostly recomputed as an attacker
would) and store damage (rows edited in SQLite), and checks that `import` either succeeds with a store that
verifies as before and shows the new character, or refuses with a castkeep error and the store unchanged.

The store (one character registered from real photos with buffalo_s_lite) and the export (another person) are
made once per module; every example works on a fresh copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from castkeep.errors import CastkeepError
from castkeep.identity.portable import _checksum
from castkeep.identity.store import Store

TOP_KEYS = ("format", "version", "name", "description", "tags", "fingerprint", "dim", "created_at", "vector",
            "baseline", "spaces", "references", "exported_at")
REFERENCE_KEYS = ("sha256", "source_path", "face_index", "bbox", "det_score", "quality", "quality_report", "pose",
                  "flagged", "added_at", "fingerprint", "embedding", "embeddings", "crop", "crop_kps")

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # JSON files hold no lone surrogates
SCALARS = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | TEXT
           | st.sampled_from([0.5, 1, 0, -1, 256, 512, "", "left", "exact"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.sampled_from(("yaw", "pitch", "roll", "source", "x")) | TEXT, inner,
                                             max_size=4), max_leaves=12)

OPERATIONS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(TOP_KEYS), JSON_VALUES),
    st.tuples(st.just("delete"), st.sampled_from(TOP_KEYS)),
    st.tuples(st.just("set-ref"), st.integers(0, 3), st.sampled_from(REFERENCE_KEYS), JSON_VALUES),
    st.tuples(st.just("delete-ref"), st.integers(0, 3), st.sampled_from(REFERENCE_KEYS)),
    st.tuples(st.just("resize"), st.sampled_from([1, 8, 256, 511, 513, 1024])),
    st.tuples(st.just("scale"), st.sampled_from([0.0, 0.5, 1.0005, 3.0, -1.0])),
    st.tuples(st.just("references"), st.sampled_from([0, 1, 3, 64, 65])),
    st.tuples(st.just("repeat-ref"), st.integers(0, 3)),
    st.tuples(st.just("flip-byte"), st.integers(0, 3), st.sampled_from(["embedding", "crop", "vector"]),
              st.integers(0, 10_000)),
)

# Damage done to the store before the import (None: a sound store), on the stored character `Other`.
STORE_DAMAGE = (None, None, None,
                "UPDATE characters SET tags = '[oops'",
                "UPDATE refs SET pose = '{\"yaw\": \"left\"}'",
                "UPDATE refs SET bbox = 'null'",
                "UPDATE characters SET vector = x'0102030405'",
                "UPDATE ref_embeddings SET vector = x'0102030405'",
                "UPDATE character_vectors SET baseline = 'null'",
                "DELETE FROM meta WHERE key = 'fingerprint'",
                "DELETE FROM meta WHERE key = 'dim'",
                "INSERT OR REPLACE INTO meta VALUES ('index_kind', 'weird')",
                "UPDATE character_vectors SET vector = substr(vector, 1, 1024), dim = 256")


def _photos(faces_dir: Path, index: int) -> list[Path]:
    folder = sorted(p for p in (faces_dir / "lfw_gallery").iterdir() if p.is_dir())[index]
    return sorted(folder.glob("*.jpg"))


class Base(tuple):
    """(a store holding `Other`, the export of `Mara` as a JSON document); its repr stays short in reports."""

    def __repr__(self) -> str:
        return f"Base({self[0]})"


@pytest.fixture(scope="module")
def base(tmp_path_factory, faces_dir, fast_analyzer) -> Base:
    folder = tmp_path_factory.mktemp("import-fuzz")
    with Store.open(folder / "mara-store", analyzer=fast_analyzer, create=True) as store:
        store.register("Mara", [str(p) for p in _photos(faces_dir, 10)[:3]], tags=["cast"])
        exported = store.export("Mara", folder / "mara.castkeep.json")
    with Store.open(folder / "store", analyzer=fast_analyzer, create=True) as store:
        store.register("Other", [str(p) for p in _photos(faces_dir, 13)[:2]])
    return Base((folder / "store", json.loads(exported.read_text(encoding="utf-8"))))


def _resized(document: dict[str, Any], dim: int, scale: float = 1.0) -> None:
    """The primary space cut to `dim` values (times `scale`), vector and spaces recomputed: self-consistent."""
    from castkeep.identity.references import combine
    from castkeep.identity.vectors import decode_vector, encode_vector, normalise

    fingerprint, references = document["fingerprint"], document["references"]
    embeddings = [normalise(decode_vector(r["embedding"])[:dim]) * np.float32(scale) for r in references]
    for reference, embedding in zip(references, embeddings, strict=True):
        reference["embedding"] = encode_vector(embedding)
        reference["embeddings"] = {fingerprint: reference["embedding"]}
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            vector = encode_vector(combine(np.stack(embeddings), np.array([r["quality"] for r in references])))
    except CastkeepError:  # all-zero embeddings have no direction: keep the old vector
        vector = document["vector"]
    document.update(dim=dim, vector=vector, spaces=[{"fingerprint": fingerprint, "dim": dim, "vector": vector}])


def _flip(text: Any, position: int) -> Any:
    if not isinstance(text, str) or not text:
        return text
    position %= len(text)
    return text[:position] + ("A" if text[position] != "A" else "B") + text[position + 1:]


def apply(document: dict[str, Any], operation: tuple) -> None:
    """One edit of a character file (an operation that does not fit what an earlier one left is skipped)."""
    kind, *args = operation
    references = document.get("references")
    which = args[0] if args and isinstance(args[0], int) else 0
    reference = (references[which % len(references)]
                 if isinstance(references, list) and references and isinstance(references[0], dict) else None)
    try:
        if kind == "set":
            document[args[0]] = args[1]
        elif kind == "delete":
            document.pop(args[0], None)
        elif kind == "set-ref" and reference is not None:
            reference[args[1]] = args[2]
        elif kind == "delete-ref" and reference is not None:
            reference.pop(args[1], None)
        elif kind in ("resize", "scale") and reference is not None:
            _resized(document, args[0] if kind == "resize" else int(document["dim"]),
                     1.0 if kind == "resize" else args[0])
        elif kind == "references" and reference is not None:
            document["references"] = [{**reference, "sha256": f"{i:064x}"} for i in range(args[0])]
        elif kind == "repeat-ref" and reference is not None:
            references.append(copy.deepcopy(reference))
        elif kind == "flip-byte":
            if args[1] == "vector":
                document["vector"] = _flip(document.get("vector"), args[2])
            elif reference is not None:
                reference[args[1]] = _flip(reference.get(args[1]), args[2])
    except (KeyError, TypeError, ValueError, AttributeError, CastkeepError):
        pass  # an earlier edit removed what this one works on


def digest(store: Path) -> str:
    with sqlite3.connect(f"file:{store / 'castkeep.sqlite3'}?mode=ro", uri=True) as db:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()


def problems(store: Path) -> list[str]:
    with Store.open(store) as opened:
        return opened.verify(repair_index=False)["problems"]


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(operations=st.lists(OPERATIONS, max_size=4), recompute_checksum=st.booleans() | st.just(True),
       damage=st.sampled_from(STORE_DAMAGE), rename=st.sampled_from([None, "Copy", "Other", ""]))
def test_import_succeeds_with_a_sound_store_or_refuses_leaving_it_unchanged(base, invoke, operations,
                                                                             recompute_checksum, damage, rename):
    store_template, export = base
    document = copy.deepcopy(export)
    for operation in operations:
        apply(document, operation)
    if recompute_checksum:
        document["checksum"] = _checksum(document)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        shutil.copytree(store_template, store)
        if damage is not None:
            with sqlite3.connect(store / "castkeep.sqlite3") as db:
                db.executescript(damage)
        file = Path(folder) / "character.castkeep.json"
        file.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        known = problems(store)
        before = digest(store)
        try:
            with Store.open(store) as opened:
                imported = opened.import_file(file, name=rename)
        except CastkeepError as exc:
            event(f"refused ({type(exc).__name__})")
            assert digest(store) == before  # refused: not one row changed
            return
        event("imported" + (" into a damaged store" if known else ""))
        # Imported: nothing new is wrong with the store, and the character reads back in every command.
        assert set(problems(store)) <= set(known)
        for argv in (["show", imported.name], ["show", imported.name, "--json"]):
            result = invoke(*argv, "--store", str(store))
            assert result.returncode == 0, result.stderr
        if not known:
            assert invoke("list", "--store", str(store)).returncode == 0
            assert invoke("verify", "--store", str(store)).returncode == 0


def test_the_unedited_export_imports(base, tmp_path):
    """The property above is not vacuous: the export itself is accepted."""
    store_template, export = base
    store = tmp_path / "store"
    shutil.copytree(store_template, store)
    file = tmp_path / "mara.castkeep.json"
    file.write_text(json.dumps(export), encoding="utf-8")
    with Store.open(store) as opened:
        assert opened.import_file(file).name == "Mara"
        assert opened.verify()["ok"]
