"""The persistent character store: SQLite is the source of truth, a FAISS index is derived from it.

    with Store.open() as store:                       # $CASTKEEP_STORE or the user data dir
        store.register("Mara", ["a.jpg", "b.jpg", "c.jpg"], description="lead", tags=["cast"])
        store.identify("render.png", k=3)              # [Match(name, score, probability, same), ...]
        store.score("render.png", "Mara")              # cosine, probability, verdict, leakage

Layout of a store folder: `castkeep.sqlite3` (WAL mode; characters, references with their
embeddings, metadata) and `index.faiss` (a cache over the character vectors, rebuilt whenever it is
missing, stale or fails its checksum). Every change is one SQLite transaction taken with
BEGIN IMMEDIATE *after* the photos were embedded, so a killed process leaves the store before or
after a registration, and concurrent writers queue on SQLite's lock instead of losing work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import (CastkeepError, DuplicateCharacterError, ImpostorReferenceError, ReferenceQualityError, StoreError,
                      UnknownCharacterError)
from . import similarity
from .calibration import probability
from ..utils import remove_stale_temporaries
from .index import KINDS, IndexFileError, VectorIndex
from .characters import Character, CharacterScore, Match, Reference
from .names import name_key, normalize_name
from .references import baseline_of, combine, find_impostors
from .vectors import from_blob, normalise, to_blob

logger = logging.getLogger(__name__)

ENV_STORE = "CASTKEEP_STORE"
DB_NAME = "castkeep.sqlite3"
INDEX_NAME = "index.faiss"
SCHEMA_VERSION = 1
MAX_REFERENCES_PER_CALL = 13
MAX_REFERENCES = 64
BUSY_TIMEOUT_S = 120.0     # concurrent registrations wait for each other this long


def default_store_path() -> Path:
    """$CASTKEEP_STORE, else `<user data dir>/castkeep/store`."""
    env = os.environ.get(ENV_STORE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("castkeep", appauthor=False)) / "store"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# A second face counts as "another person in the photo" only if it is at least this fraction of the
# largest face's size (background faces in news photos are far smaller than the subject's).
BYSTANDER_RATIO = 0.5


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS characters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    fingerprint TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    baseline TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    source_path TEXT NOT NULL,
    face_index INTEGER,
    bbox TEXT NOT NULL,
    det_score REAL NOT NULL,
    quality REAL NOT NULL,
    quality_report TEXT NOT NULL,
    pose TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    embedding BLOB NOT NULL,
    flagged INTEGER NOT NULL DEFAULT 0,
    added_at TEXT NOT NULL,
    UNIQUE (character_id, sha256)
);
CREATE INDEX IF NOT EXISTS refs_by_character ON refs(character_id);
CREATE INDEX IF NOT EXISTS refs_by_sha256 ON refs(sha256);
"""

_IMAGE_SPEC = re.compile(r"^(?P<path>.+):(?P<face>\d+)$")


def parse_image_spec(spec: Any) -> tuple[Any, int | None]:
    """`photo.jpg:1` picks face 1 of a group photo; anything else is the image itself."""
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        match = _IMAGE_SPEC.match(text)
        if match and not Path(text).exists() and Path(match["path"]).exists():
            return match["path"], int(match["face"])
    return spec, None


class Store:
    """A folder holding characters. Open with `Store.open(path)`; use as a context manager."""

    def __init__(self, path: Path, connection: sqlite3.Connection, *, analyzer: Any = None,
                 models: str | None = None, device: str = "cpu") -> None:
        self.path = path
        self._db = connection
        self._analyzer = analyzer
        self._owns_analyzer = False
        self._models = models
        self._device = device
        self._index: VectorIndex | None = None
        self._index_generation = -1
        self._no_landmarker = False

    # ------------------------------------------------------------------ opening and closing
    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, analyzer: Any = None,
             models: str | None = None, device: str = "cpu", create: bool = True,
             index_kind: str | None = None) -> "Store":
        """Open (and with `create`, make) the store at `path` (default: `default_store_path()`)."""
        folder = Path(path).expanduser() if path is not None else default_store_path()
        if folder.exists() and not folder.is_dir():
            raise StoreError("store path is a file, not a store folder", path=folder)
        db_path = folder / DB_NAME
        if not db_path.exists():
            if not create:
                raise StoreError("no character store here (register a character first)", path=folder)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store folder ({exc.strerror})", path=folder) from None
        elif db_path.stat().st_size == 0 and not create:
            raise StoreError("store database is empty", path=db_path)
        try:
            connection = sqlite3.connect(os.fspath(db_path), timeout=BUSY_TIMEOUT_S,
                                         isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store database ({exc})", path=db_path) from None
        store = cls(folder.resolve(), connection, analyzer=analyzer, models=models, device=device)
        try:
            store._initialise()
            if index_kind is not None:
                store.set_index_kind(index_kind)
        except BaseException:
            connection.close()
            raise
        remove_stale_temporaries(store.path)
        return store

    def _initialise(self) -> None:
        with self._guard():
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._db.execute("PRAGMA foreign_keys = ON")
            tables = {row[0] for row in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                raise StoreError("this database is not a castkeep store", path=self.db_path)
            if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._retry_busy(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
            self._db.execute("PRAGMA synchronous = FULL")
            if "meta" not in tables or "refs" not in tables:
                with self._write():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    defaults = {"schema_version": str(SCHEMA_VERSION), "generation": "0",
                                "index_kind": "exact", "created_at": _now()}
                    self._db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                                         defaults.items())
            version = self._meta("schema_version")
            if version != str(SCHEMA_VERSION):
                raise StoreError(f"store schema version {version} is not supported by this castkeep "
                                 f"(expects {SCHEMA_VERSION})", path=self.db_path)

    @staticmethod
    def _retry_busy(action: Any, attempts: int = 50) -> Any:
        for attempt in range(attempts):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]
        if self._owns_analyzer and self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_NAME

    # ------------------------------------------------------------------ SQLite plumbing
    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Every SQLite failure becomes one StoreError line naming the database."""
        if self._db is None:
            raise StoreError("store is closed", path=self.path)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"store is busy (another process held its lock for over "
                                 f"{BUSY_TIMEOUT_S:.0f} s)", path=self.db_path) from None
            raise StoreError(f"store database error ({exc})", path=self.db_path) from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store database is corrupt ({exc}); restore it from a backup or "
                             f"an export", path=self.db_path) from None

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction; the lock is taken up front so concurrent writers queue."""
        self._retry_busy(lambda: self._db.execute("BEGIN IMMEDIATE"))
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (key, value))

    def _bump_generation(self) -> int:
        generation = int(self._meta("generation") or 0) + 1
        self._set_meta("generation", str(generation))
        return generation

    @property
    def generation(self) -> int:
        with self._guard():
            return int(self._meta("generation") or 0)

    @property
    def fingerprint(self) -> str | None:
        """The embedding model of every vector in this store (None until the first character)."""
        with self._guard():
            return self._meta("fingerprint")

    @property
    def index_kind(self) -> str:
        with self._guard():
            return self._meta("index_kind") or "exact"

    def set_index_kind(self, kind: str) -> None:
        """Choose exact (flat) search or an approximate index (hnsw, ivf) for large stores."""
        if kind not in KINDS:
            raise StoreError(f"unknown index kind '{kind}' (use {', '.join(KINDS)})")
        with self._guard():
            if self._meta("index_kind") != kind:
                with self._write():
                    self._set_meta("index_kind", kind)
                    self._set_meta("index_generation", "-1")
                self._index, self._index_generation = None, -1

    # ------------------------------------------------------------------ analyzer
    @property
    def analyzer(self) -> Any:
        """The FaceAnalyzer for queries (detection + embedding), made on first use."""
        return self._get_analyzer(dense=False)

    def _get_analyzer(self, *, dense: bool) -> Any:
        """A given analyzer is used as it is; a lazily made one gets the MediaPipe mesh (better
        pose for `show`'s coverage) only when registering, and only if the landmarker is here."""
        current = self._analyzer
        if current is not None and (not self._owns_analyzer or not dense or current.dense is not None
                                    or self._no_landmarker):
            return current
        from ..landmarks.mesh import resolve_landmarker
        from .analyzer import FaceAnalyzer
        from ..landmarks.model_pack import ModelPack

        pack = current.pack if current is not None else ModelPack.from_pretrained(self._models, device=self._device)
        landmarker = None
        if dense:
            try:
                landmarker = resolve_landmarker(None, search=(pack.path,), download=False)
            except CastkeepError:
                self._no_landmarker = True  # keypoint pose is enough for coverage; no network
        if current is not None:
            current.close()
        self._analyzer = FaceAnalyzer(pack, dense=landmarker is not None, landmarks_106=False,
                                      landmarker_path=landmarker)
        self._owns_analyzer = True
        return self._analyzer

    def _check_fingerprint(self, fingerprint: str) -> None:
        stored = self._meta("fingerprint")
        if stored is not None and stored != fingerprint:
            raise StoreError(f"this store holds embeddings from model '{stored}', not '{fingerprint}'; "
                             f"embeddings of different models cannot be mixed (use --models to pick "
                             f"the store's pack, or another --store)", path=self.path)

    # ------------------------------------------------------------------ reading
    def _character_rows(self, where: str = "", args: Sequence[Any] = ()) -> list[Character]:
        rows = self._db.execute(
            "SELECT id, name, description, tags, fingerprint, dim, vector, baseline, created_at, "
            f"updated_at FROM characters {where} ORDER BY name_key", args).fetchall()
        characters = {}
        for row in rows:
            characters[row[0]] = Character(
                id=row[0], name=row[1], description=row[2], tags=json.loads(row[3]),
                fingerprint=row[4], vector=from_blob(row[6]), baseline=json.loads(row[7]),
                created_at=row[8], updated_at=row[9])
        if not characters:
            return []
        ids = list(characters)
        ref_rows: list[Any] = []
        for start in range(0, len(ids), 500):  # SQLite caps bound parameters
            chunk = ids[start:start + 500]
            ref_rows += self._db.execute(
                "SELECT character_id, id, sha256, source_path, face_index, bbox, det_score, quality, "
                "quality_report, pose, fingerprint, embedding, flagged, added_at FROM refs "
                f"WHERE character_id IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk).fetchall()
        for r in ref_rows:
            characters[r[0]].references.append(Reference(
                id=r[1], sha256=r[2], source_path=r[3], face_index=r[4], bbox=json.loads(r[5]),
                det_score=r[6], quality=r[7], quality_report=json.loads(r[8]), pose=json.loads(r[9]),
                fingerprint=r[10], embedding=from_blob(r[11]), flagged=bool(r[12]), added_at=r[13]))
        return list(characters.values())

    def get(self, name: str) -> Character:
        """The character called `name` (case-insensitive); UnknownCharacterError if none."""
        key = name_key(name)
        with self._guard():
            found = self._character_rows("WHERE name_key = ?", (key,))
        if not found:
            raise UnknownCharacterError(f"no character named '{normalize_name(name)}' in this store "
                                        f"(see `castkeep list`)")
        return found[0]

    def __contains__(self, name: str) -> bool:
        with self._guard():
            return self._db.execute("SELECT 1 FROM characters WHERE name_key = ?",
                                    (name_key(name),)).fetchone() is not None

    def list(self) -> list[Character]:
        with self._guard():
            return self._character_rows()

    def names(self) -> list[str]:
        with self._guard():
            return [r[0] for r in self._db.execute("SELECT name FROM characters ORDER BY name_key")]

    def __len__(self) -> int:
        with self._guard():
            return int(self._db.execute("SELECT COUNT(*) FROM characters").fetchone()[0])

    # ------------------------------------------------------------------ registration
    def _reference_candidates(self, image: Any, face: int | None = None) -> list[Reference]:
        """The reference a photo gives: one face, or every comparable face when it is ambiguous."""
        from ..landmarks.images import describe_source, load_image

        source, spec_face = parse_image_spec(image)
        face = spec_face if spec_face is not None else face
        if isinstance(source, (str, os.PathLike)):
            # Decoded once, here: one clear ImageError for missing/corrupt files before hashing.
            pixels = load_image(source)
            digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
            label = os.fspath(Path(source).resolve())
        else:
            pixels = source
            array = np.asarray(source)
            digest = hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()
            label = describe_source(source)
        analyzer = self.analyzer
        analysis = analyzer.analyze(pixels, dense=getattr(analyzer, "dense", None) is not None)
        analysis.source = label  # face errors name the photo, not the decoded array
        if face is not None:
            chosen = [analysis.face(face)]
        elif len(analysis.faces) <= 1:
            chosen = [analysis.face()]  # NoFaceError naming the file when there is none
        else:
            largest = analysis.faces[0]
            chosen = [largest] + [f for f in analysis.faces[1:] if f.size >= BYSTANDER_RATIO * largest.size]
        return [Reference(sha256=digest, source_path=label, embedding=normalise(f.embedding),
                          quality=float(f.quality.score), det_score=float(f.det_score),
                          bbox=[float(v) for v in f.bbox], face_index=f.index,
                          pose=f.pose.to_dict(), quality_report=f.quality.to_dict(),
                          fingerprint=analyzer.fingerprint) for f in chosen]

    def _embed_all(self, images: Sequence[Any], face: int | None, force: bool,
                   progress: Any = None, anchors: Sequence[Reference] = ()) -> tuple[list[Reference], list[str]]:
        """Embed every photo (outside any lock). A photo with several comparable faces uses the
        face that matches the unambiguous references (`anchors` plus the other photos)."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        if not images:
            raise StoreError("no reference photos given")
        if len(images) > MAX_REFERENCES_PER_CALL:
            raise StoreError(f"{len(images)} reference photos given; at most "
                             f"{MAX_REFERENCES_PER_CALL} per call (add more with add-refs)")
        warnings: list[str] = []
        found: list[list[Reference]] = []
        seen: set[str] = set()
        iterator = progress(images) if progress is not None else images
        for image in iterator:
            candidates = self._reference_candidates(image, face)
            if candidates[0].sha256 in seen:
                warnings.append(f"{candidates[0].source_path}: same photo given twice; used once")
                continue
            seen.add(candidates[0].sha256)
            found.append(candidates)
        settled = list(anchors) + [c[0] for c in found if len(c) == 1]
        references: list[Reference] = []
        for candidates in found:
            ref = candidates[0]
            if len(candidates) > 1:
                ref = self._disambiguate(candidates, settled)
                warnings.append(f"{ref.source_path}: {len(candidates)} faces; used face {ref.face_index}, "
                                f"the one that matches the other references")
            if not ref.quality_report.get("usable", True):
                reason = ref.quality_report.get("reason") or "low quality"
                if not force:
                    raise ReferenceQualityError(f"reference photo fails the quality gate: {reason} "
                                                f"(use another photo, or --force to keep it)",
                                                path=ref.source_path)
                warnings.append(f"{ref.source_path}: kept despite low quality ({reason})")
            references.append(ref)
        return references, warnings

    @staticmethod
    def _disambiguate(candidates: list[Reference], settled: list[Reference]) -> Reference:
        from ..errors import MultipleFacesError

        advice = (f"{len(candidates)} faces of similar size found; crop the photo or pick one as "
                  f"PHOTO:N (0 = largest)")
        if not settled:
            raise MultipleFacesError(advice, path=candidates[0].source_path)
        anchor = combine(np.stack([r.embedding for r in settled]), np.array([r.quality for r in settled]))
        scores = [float(np.dot(anchor, c.embedding)) for c in candidates]
        order = np.argsort(scores)[::-1]
        best, runner_up = scores[order[0]], scores[order[1]]
        threshold = similarity.SAME_PERSON_THRESHOLD
        if best < threshold or runner_up >= threshold:
            raise MultipleFacesError(f"{advice} (none, or more than one, matches the other references)",
                                     path=candidates[0].source_path)
        return candidates[int(order[0])]

    def _gate_impostors(self, references: list[Reference], new: set[int], force: bool,
                        warnings: list[str]) -> None:
        embeddings = np.stack([r.embedding for r in references])
        weights = np.array([r.quality for r in references])
        flagged = find_impostors(embeddings, weights)
        threshold = similarity.SAME_PERSON_THRESHOLD
        # Only a newly given photo can be rejected; stored ones were accepted before.
        new_flags = {i: s for i, s in flagged.items() if i in new}
        if not new_flags:
            return
        worst = min(new_flags, key=new_flags.get)
        what = ("the two reference photos do not match each other" if len(references) == 2
                else "does not look like the same person as the other references")
        if not force:
            path = references[worst].source_path if len(references) != 2 else None
            raise ImpostorReferenceError(
                f"{what} (similarity {new_flags[worst]:.2f} < {threshold:.2f}); remove it or pass "
                f"--force to keep it", path=path)
        for i, score in new_flags.items():
            references[i].flagged = True
            warnings.append(f"{references[i].source_path}: kept with --force although flagged as "
                            f"another person (similarity {score:.2f})")

    def _duplicate_warnings(self, vector: np.ndarray, references: list[Reference],
                            exclude_id: int | None) -> list[str]:
        warnings = []
        hits = [h for h in self._search(vector, 2) if h.id != exclude_id]
        if hits and hits[0].same:
            warnings.append(f"looks like existing character '{hits[0].name}' (cosine {hits[0].score:.2f}); "
                            f"is this a duplicate registration?")
        shas = [r.sha256 for r in references]
        with self._guard():
            rows = self._db.execute(
                "SELECT DISTINCT c.name, c.id FROM refs r JOIN characters c ON c.id = r.character_id "
                f"WHERE r.sha256 IN ({','.join('?' * len(shas))})", shas).fetchall()
        for other, other_id in rows:
            if other_id != exclude_id:
                warnings.append(f"a reference photo is already a reference of '{other}'")
        return warnings

    def register(self, name: str, images: Sequence[Any], *, description: str = "",
                 tags: Iterable[str] = (), force: bool = False, face: int | None = None,
                 progress: Any = None) -> Character:
        """Register a character from 1–13 reference photos (paths, `path:N`, arrays or PIL images).

        Every photo must hold exactly one face (or name one with `face` / `path:N`) that passes the
        quality gate; a photo that is not the same person as the others raises
        ImpostorReferenceError. `force` keeps such photos (flagged). Warnings (duplicate
        registration, repeated photo) are in the returned character's `warnings`.
        """
        name = normalize_name(name)
        key = name_key(name)
        if name in self:
            raise DuplicateCharacterError(f"a character named '{self.get(name).name}' already exists "
                                          f"(use add-refs to give it more photos, or remove it first)")
        tags = _clean_tags(tags)
        fingerprint = self._get_analyzer(dense=True).fingerprint
        with self._guard():
            self._check_fingerprint(fingerprint)
        references, warnings = self._embed_all(images, face, force, progress)
        self._gate_impostors(references, set(range(len(references))), force, warnings)
        embeddings = np.stack([r.embedding for r in references])
        weights = np.array([r.quality for r in references])
        vector = combine(embeddings, weights)
        baseline = baseline_of(embeddings, weights)
        warnings += self._duplicate_warnings(vector, references, None)
        now = _now()
        with self._guard():
            with self._write():
                # Re-checked under the lock: another process may have won the race.
                self._check_fingerprint(fingerprint)
                if self._db.execute("SELECT 1 FROM characters WHERE name_key = ?", (key,)).fetchone():
                    raise DuplicateCharacterError(f"a character named '{name}' already exists")
                if self._meta("fingerprint") is None:
                    self._set_meta("fingerprint", fingerprint)
                cursor = self._db.execute(
                    "INSERT INTO characters(name, name_key, description, tags, fingerprint, dim, vector, "
                    "baseline, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, key, description, json.dumps(tags, ensure_ascii=False), fingerprint,
                     int(vector.size), to_blob(vector), json.dumps(baseline), now, now))
                character_id = int(cursor.lastrowid)
                self._insert_refs(character_id, references, now)
                generation = self._bump_generation()
        self._apply_delta(generation, add={character_id: vector})
        character = self.get(name)
        character.warnings = warnings
        return character

    def _insert_refs(self, character_id: int, references: list[Reference], now: str) -> None:
        self._db.executemany(
            "INSERT INTO refs(character_id, sha256, source_path, face_index, bbox, det_score, quality, "
            "quality_report, pose, fingerprint, embedding, flagged, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(character_id, r.sha256, r.source_path, r.face_index, json.dumps(r.bbox), r.det_score,
              r.quality, json.dumps(r.quality_report), json.dumps(r.pose), r.fingerprint,
              to_blob(r.embedding), int(r.flagged), r.added_at or now) for r in references])

    def add_refs(self, name: str, images: Sequence[Any], *, force: bool = False,
                 face: int | None = None, progress: Any = None) -> Character:
        """Give an existing character more reference photos; its vector and baseline are refit."""
        existing = self.get(name)
        fingerprint = self._get_analyzer(dense=True).fingerprint
        with self._guard():
            self._check_fingerprint(fingerprint)
        new_refs, warnings = self._embed_all(images, face, force, progress,
                                             anchors=existing.references)
        stored = {r.sha256 for r in existing.references}
        fresh = []
        for ref in new_refs:
            if ref.sha256 in stored:
                warnings.append(f"{ref.source_path}: already a reference of '{existing.name}'; skipped")
            else:
                fresh.append(ref)
        if not fresh:
            raise StoreError(f"no new reference photos for '{existing.name}' (all are stored already)")
        if len(existing.references) + len(fresh) > MAX_REFERENCES:
            raise StoreError(f"'{existing.name}' would have more than {MAX_REFERENCES} references")
        combined = existing.references + fresh
        self._gate_impostors(combined, set(range(len(existing.references), len(combined))), force,
                             warnings)
        now = _now()
        with self._guard():
            with self._write():
                row = self._db.execute("SELECT id FROM characters WHERE id = ?", (existing.id,)).fetchone()
                if row is None:
                    raise UnknownCharacterError(f"character '{existing.name}' was removed meanwhile")
                self._insert_refs(existing.id, fresh, now)
                # Refit from what is stored now (another process may have added references too).
                rows = self._db.execute("SELECT embedding, quality FROM refs WHERE character_id = ?",
                                        (existing.id,)).fetchall()
                embeddings = np.stack([from_blob(r[0]) for r in rows])
                weights = np.array([r[1] for r in rows])
                vector = combine(embeddings, weights)
                self._db.execute("UPDATE characters SET vector = ?, baseline = ?, updated_at = ? "
                                 "WHERE id = ?", (to_blob(vector), json.dumps(baseline_of(embeddings, weights)),
                                                  now, existing.id))
                generation = self._bump_generation()
        self._apply_delta(generation, remove=[existing.id], add={existing.id: vector})
        character = self.get(existing.name)
        character.warnings = warnings
        return character

    def remove(self, name: str) -> None:
        character = self.get(name)
        with self._guard():
            with self._write():
                deleted = self._db.execute("DELETE FROM characters WHERE id = ?", (character.id,)).rowcount
                if not deleted:
                    raise UnknownCharacterError(f"no character named '{character.name}'")
                generation = self._bump_generation()
        self._apply_delta(generation, remove=[character.id])

    # ------------------------------------------------------------------ the FAISS index (a cache)
    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._db.execute("SELECT id, vector FROM characters ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vectors = (np.stack([from_blob(r[1]) for r in rows]) if rows
                   else np.zeros((0, 512), dtype=np.float32))
        return ids, vectors

    def _rebuild_index(self) -> tuple[VectorIndex, int]:
        """Build the index from the database, in a consistent snapshot."""
        with self._guard():
            self._db.execute("BEGIN")  # a read transaction: one consistent snapshot
            try:
                generation = int(self._meta("generation") or 0)
                kind = self._meta("index_kind") or "exact"
                ids, vectors = self._all_vectors()
            finally:
                self._db.execute("COMMIT")
        dim = vectors.shape[1] if len(vectors) else 512
        index = VectorIndex(dim, kind)
        if len(ids):
            index.add(vectors, ids)
        return index, generation

    def _save_index(self, index: VectorIndex, generation: int) -> None:
        """Write the cache file, then record its checksum if the store has not changed since."""
        try:
            data = index.save(self.index_path, meta={"generation": generation})
        except OSError as exc:  # a read-only store still answers queries from memory
            logger.info("could not write the index cache: %s", exc)
            return
        digest = hashlib.sha256(data).hexdigest()
        try:
            with self._guard():
                with self._write():
                    if int(self._meta("generation") or 0) == generation:
                        self._set_meta("index_generation", str(generation))
                        self._set_meta("index_sha256", digest)
        except StoreError as exc:  # e.g. a read-only database: the cache just stays unrecorded
            logger.info("could not record the index checksum: %s", exc)

    def _load_index_file(self, generation: int) -> tuple[VectorIndex | None, str]:
        """The cached index if it is the current one, else None and why not."""
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return None, "missing"
        except OSError:
            return None, "unreadable"
        with self._guard():
            recorded_generation = self._meta("index_generation")
            recorded_sha = self._meta("index_sha256")
        if hashlib.sha256(data).hexdigest() != recorded_sha:
            # Either a newer/older writer's file or a tampered one: only the DB can tell which.
            if recorded_generation is not None and int(recorded_generation) == generation:
                return None, "corrupt"
            return None, "stale"
        if recorded_generation is None or int(recorded_generation) != generation:
            return None, "stale"
        try:
            index, meta = VectorIndex.from_bytes(data, source=os.fspath(self.index_path))
        except IndexFileError:
            return None, "corrupt"
        if meta.get("generation") != generation or index.kind != self.index_kind:
            return None, "stale"
        return index, "current"

    def _ensure_index(self) -> VectorIndex:
        generation = self.generation
        if self._index is not None and self._index_generation == generation:
            return self._index
        index, state = self._load_index_file(generation)
        if index is None:
            if state == "corrupt":
                logger.info("index file %s failed its checksum; rebuilt from the database",
                               self.index_path)
            index, generation = self._rebuild_index()
            self._save_index(index, generation)
        self._index, self._index_generation = index, generation
        return index

    def _apply_delta(self, generation: int, *, add: dict[int, np.ndarray] | None = None,
                     remove: Sequence[int] = ()) -> None:
        """Keep the in-memory index current after our own write, when it was current before it."""
        if self._index is None or self._index_generation != generation - 1:
            self._index, self._index_generation = None, -1
            return
        try:
            if remove:
                self._index.remove(remove)
            if add:
                self._index.add(np.stack(list(add.values())), list(add))
        except NotImplementedError:  # HNSW cannot remove: rebuild lazily
            self._index, self._index_generation = None, -1
            return
        self._index_generation = generation
        self._save_index(self._index, generation)

    def rebuild_index(self) -> dict[str, Any]:
        """Rebuild the FAISS cache from the database now."""
        index, generation = self._rebuild_index()
        self._save_index(index, generation)
        self._index, self._index_generation = index, generation
        return {"kind": index.kind, "count": len(index), "generation": generation}

    # ------------------------------------------------------------------ queries
    def _query_vector(self, source: Any, face: int | None = None) -> np.ndarray:
        if isinstance(source, np.ndarray) and source.ndim == 1:
            return normalise(source)
        if isinstance(source, (list, tuple)) and source and isinstance(source[0], (float, int)):
            return normalise(np.asarray(source, dtype=np.float32))
        analyzer = self.analyzer
        with self._guard():
            self._check_fingerprint(analyzer.fingerprint)
        source, spec_face = parse_image_spec(source)
        return normalise(analyzer.embed(source, face=spec_face if spec_face is not None else face).embedding)

    @dataclass
    class _Hit:
        id: int
        name: str
        name_key: str
        score: float
        same: bool

    def _search(self, vector: np.ndarray, k: int) -> list["Store._Hit"]:
        index = self._ensure_index()
        if len(index) == 0 or k <= 0:
            return []
        if vector.shape[0] != index.dim:
            raise StoreError(f"query embedding has {vector.shape[0]} values; this store's have {index.dim}")
        scores, ids = index.search(vector, min(k, len(index)))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        if not found:
            return []
        with self._guard():
            names = dict((r[0], (r[1], r[2])) for r in self._db.execute(
                f"SELECT id, name, name_key FROM characters WHERE id IN ({','.join('?' * len(found))})",
                [i for i, _ in found]))
        threshold = similarity.SAME_PERSON_THRESHOLD
        return [self._Hit(i, names[i][0], names[i][1], s, s >= threshold) for i, s in found if i in names]

    def identify(self, source: Any, *, k: int = 5, face: int | None = None) -> list[Match]:
        """The k stored characters closest to a face (image, `path:N`, or a 1-D embedding), best first."""
        if self.fingerprint is None and not isinstance(source, np.ndarray):
            return []
        vector = self._query_vector(source, face)
        return [Match(h.name, h.score, float(probability(h.score)), h.same) for h in self._search(vector, k)]

    def score(self, source: Any, name: str, *, face: int | None = None) -> CharacterScore:
        """How well a face matches character `name`, and whether another character matches better."""
        character = self.get(name)
        vector = self._query_vector(source, face)
        if vector.shape != character.vector.shape:
            raise StoreError(f"query embedding has {vector.size} values; '{character.name}' has "
                             f"{character.vector.size}")
        cosine = float(np.dot(vector, character.vector))
        others = [h for h in self._search(vector, 2) if h.id != character.id]
        closest = (Match(others[0].name, others[0].score, float(probability(others[0].score)),
                         others[0].same) if others else None)
        threshold = similarity.SAME_PERSON_THRESHOLD
        return CharacterScore(name=character.name, cosine=cosine, probability=float(probability(cosine)),
                              same=cosine >= threshold, threshold=threshold, closest_other=closest,
                              leakage=closest is not None and closest.score > cosine,
                              baseline_mean=character.baseline.get("mean"))

    # ------------------------------------------------------------------ export / import
    def export(self, name: str, out_path: str | os.PathLike) -> Path:
        from .portable import write_character

        return write_character(self.get(name), Path(out_path))

    def import_file(self, path: str | os.PathLike, *, name: str | None = None) -> Character:
        """Add a character from an exported file (same model pack only); `name` renames it."""
        from .portable import read_character

        character = read_character(Path(path))
        if name is not None:
            character.name = normalize_name(name)
        key = name_key(character.name)
        embeddings = np.stack([r.embedding for r in character.references])
        weights = np.array([r.quality for r in character.references])
        vector = combine(embeddings, weights)
        now = _now()
        with self._guard():
            with self._write():
                self._check_fingerprint(character.fingerprint)
                if self._db.execute("SELECT 1 FROM characters WHERE name_key = ?", (key,)).fetchone():
                    raise DuplicateCharacterError(f"a character named '{character.name}' already exists "
                                                  f"(import it under another name with --name)")
                if self._meta("fingerprint") is None:
                    self._set_meta("fingerprint", character.fingerprint)
                cursor = self._db.execute(
                    "INSERT INTO characters(name, name_key, description, tags, fingerprint, dim, vector, "
                    "baseline, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (character.name, key, character.description,
                     json.dumps(character.tags, ensure_ascii=False), character.fingerprint,
                     int(vector.size), to_blob(vector), json.dumps(baseline_of(embeddings, weights)),
                     character.created_at or now, now))
                character_id = int(cursor.lastrowid)
                self._insert_refs(character_id, character.references, now)
                generation = self._bump_generation()
        self._apply_delta(generation, add={character_id: vector})
        imported = self.get(character.name)
        imported.warnings = self._duplicate_warnings(vector, character.references, character_id)
        return imported

    # ------------------------------------------------------------------ integrity
    def verify(self, *, repair_index: bool = True) -> dict[str, Any]:
        """Check the database (SQLite integrity, every row decodes, vectors match their references)
        and the index cache; with `repair_index`, a stale or corrupt index is rebuilt."""
        problems: list[str] = []
        with self._guard():
            integrity = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall()]
            if integrity != ["ok"]:
                problems += [f"sqlite: {line}" for line in integrity[:10]]
            if self._db.execute("PRAGMA foreign_key_check").fetchall():
                problems.append("references without a character")
            characters = self._character_rows()
            generation = int(self._meta("generation") or 0)
            fingerprint = self._meta("fingerprint")
            ref_count = int(self._db.execute("SELECT COUNT(*) FROM refs").fetchone()[0])
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
        index_report: dict[str, Any] = {"kind": self.index_kind}
        _, state = self._load_index_file(generation)
        index_report["state"] = state
        if state != "current" and repair_index and not problems:
            index_report.update(self.rebuild_index())
            index_report["rebuilt"] = True
        elif state == "current":
            index = self._ensure_index()
            ids = set(index.ids().tolist())
            if ids != {c.id for c in characters}:
                index_report["state"] = "mismatch"
                if repair_index:
                    index_report.update(self.rebuild_index())
                    index_report["rebuilt"] = True
        return {"ok": not problems, "store": os.fspath(self.path), "characters": len(characters),
                "references": ref_count, "generation": generation, "fingerprint": fingerprint,
                "index": index_report, "problems": problems}


def _clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    cleaned: list[str] = []
    for tag in tags:
        tag = " ".join(str(tag).split())
        if not tag:
            continue
        if len(tag) > 64:
            raise StoreError(f"tag '{tag[:20]}...' is too long (64 characters at most)")
        if tag not in cleaned:
            cleaned.append(tag)
    return cleaned
