"""The persistent character store: SQLite is the source of truth, a FAISS index is derived from it.

    with Store.open(create=True) as store:             # $CASTKEEP_STORE or the user data dir
        store.register("Mara", ["a.jpg", "b.jpg", "c.jpg"], description="lead", tags=["cast"])
        store.identify("render.png", k=3)              # [Match(name, score, probability, same), ...]
        store.score("render.png", "Mara")              # cosine, probability, verdict, leakage

        store.reembed("Mara", models="buffalo_l")      # add buffalo_l's space from the stored crops
        store.vector("Mara", "buffalo_l")              # Mara's vector in that space

Layout of a store folder: `castkeep.sqlite3` (WAL mode; characters, references with their aligned
face crops and embeddings, one embedding space per recogniser, metadata) and `index.faiss` (a cache
over the character vectors of the primary space, rebuilt whenever it is missing, stale or fails its
checksum). The primary space is the model the store was created with (its meta `fingerprint`):
registration, identify and score use it; `reembed` adds others. Every change is one SQLite transaction taken with
BEGIN IMMEDIATE *after* the photos were embedded, so a killed process leaves the store before or
after a registration, and concurrent writers queue on SQLite's lock instead of losing work.

`Store` is the facade; the parts live in database (connection, transactions, meta), migrations
(schema versions), rows (row <-> record mapping), enrolment (photos -> accepted references),
crops (the stored face crops), reembedding (references -> another space), index_cache (the FAISS
cache) and integrity (verify).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CastkeepError,
    DuplicateCharacterError,
    NoStoreError,
    StoreError,
    UnknownCharacterError,
)
from ..landmarks.model_pack import same_space
from ..utils import remove_stale_temporaries, utc_now
from . import integrity, migrations, rows, similarity
from .backend import StoreDatabase
from .calibration import probability
from .characters import Character, CharacterScore, Match, Reference, Space, pack_of
from .database import DB_NAME, READ_ONLY_MESSAGE, Database, wal_holds_data
from .enrolment import MAX_REFERENCES, MAX_REFERENCES_PER_CALL, embed_references, gate_impostors, parse_image_spec
from .index_cache import INDEX_NAME, IndexCache, SearchIndex
from .names import clean_description, clean_tags, name_key, normalize_name
from .open_set import DEFAULT_FPIR, open_set_threshold
from .postgres import is_server_url
from .reembedding import ReembedReport, embed_character
from .references import baseline_of, combine
from .vectors import normalise

__all__ = ["Store", "default_store_path", "parse_image_spec", "ENV_STORE", "DB_NAME", "INDEX_NAME",
           "MAX_REFERENCES", "MAX_REFERENCES_PER_CALL"]

ENV_STORE = "CASTKEEP_STORE"


CREATION_SECONDS = 30  # a new store's file is empty only while its creator writes the schema


def _just_created(db_path: Path) -> bool:
    return time.time() - db_path.stat().st_mtime < CREATION_SECONDS


def default_store_path() -> Path | str:
    """$CASTKEEP_STORE (a folder, or a `postgresql://` URL), else `<user data dir>/castkeep/store`."""
    env = os.environ.get(ENV_STORE)
    if env:
        return env if is_server_url(env) else Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("castkeep", appauthor=False)) / "store"


@dataclass
class _Hit:
    id: int
    name: str
    score: float
    same: bool


class Store:
    """A folder, or a PostgreSQL database, holding characters. Open with `Store.open(path_or_url)`; use as
    a context manager."""

    def __init__(self, path: Path | None, db: StoreDatabase, *, analyzer: Any = None, models: str | None = None,
                 device: str = "cpu", index: SearchIndex | None = None) -> None:
        self.path = path  # the store folder; None for a PostgreSQL store
        self.location = db.location if path is None else os.fspath(path)  # what messages name (no password)
        self._db = db
        if index is None:
            assert path is not None
            index = IndexCache(db, path / INDEX_NAME)
        self._index = index
        self._analyzer = analyzer
        self._owns_analyzer = False
        self._models = models
        self._device = device
        self._no_landmarker = False

    # ------------------------------------------------------------------ opening and closing
    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, analyzer: Any = None,
             models: str | None = None, device: str = "cpu", create: bool = False,
             index_kind: str | None = None, read_only: bool | None = None) -> Store:
        """Open the store at `path` (default: `default_store_path()`). Only with `create` is a
        missing store made; otherwise NoStoreError, so a mistyped path is never a new empty store.

        A store whose folder or database file cannot be written (permissions, a read-only mount,
        `chattr +i`) opens read-only, as does any store with `read_only=True`: queries work, nothing
        is written (the index cache stays in memory), and changes raise StoreError.

        A `postgresql://user@host:port/db` URL opens the team store in that database (the [postgres]
        extra; identity/postgres.py): the same calls, answers and guarantees."""
        location = path if path is not None else default_store_path()
        if is_server_url(location):
            return cls._open_server(str(location), analyzer=analyzer, models=models, device=device,
                                    create=create, index_kind=index_kind, read_only=bool(read_only))
        folder = Path(location).expanduser()
        if folder.exists() and not folder.is_dir():
            raise StoreError("store path is a file, not a store folder", path=folder)
        db_path = folder / DB_NAME
        if not db_path.exists():
            if not create:
                raise NoStoreError(f"no character store at {folder} (register a character to create one)")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store folder ({exc.strerror})", path=folder) from None
        elif db_path.stat().st_size == 0 and not wal_holds_data(db_path) and not _just_created(db_path):
            # Never silently start over: an empty database where a store was is a failed copy or a full
            # disk, and a new store in its place would hide that (a non-empty WAL still holds the store;
            # a file seconds old is another process creating this store right now).
            raise StoreError("store database is empty (0 bytes), not a castkeep store any more (a failed copy or "
                             "a full disk?); move it away to start a new store here", path=db_path)
        if read_only is None:
            read_only = db_path.exists() and not (os.access(folder, os.W_OK) and os.access(db_path, os.W_OK))
        db = Database.connect(db_path, read_only=read_only)
        try:
            with db.guard():
                migrations.refuse_foreign(db)  # before WAL: never convert someone else's database
                if not read_only:
                    db.use_wal()
                migrations.prepare(db)  # create a new store's tables, or migrate an older store
            store = cls(folder.resolve(), db, analyzer=analyzer, models=models, device=device)
            if index_kind is not None:
                store.set_index_kind(index_kind)
        except BaseException:
            db.close()
            raise
        if not read_only:
            remove_stale_temporaries(folder)
        return store

    @classmethod
    def _open_server(cls, url: str, *, analyzer: Any, models: str | None, device: str, create: bool,
                     index_kind: str | None, read_only: bool) -> Store:
        from . import postgres
        from .pg_search import PgVectorSearch

        db = postgres.PostgresDatabase.connect(url, read_only=read_only)
        try:
            with db.guard():
                postgres.prepare(db, create=create)
            store = cls(None, db, analyzer=analyzer, models=models, device=device, index=PgVectorSearch(db))
            if index_kind is not None:
                store.set_index_kind(index_kind)
        except BaseException:
            db.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    @property
    def read_only(self) -> bool:
        """Whether this store was opened read-only (see `open`)."""
        return self._db.read_only

    def close(self) -> None:
        self._db.close()
        if self._owns_analyzer and self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_path(self) -> Path:
        """The SQLite database file (a folder store's)."""
        return self._folder() / DB_NAME

    @property
    def index_path(self) -> Path:
        """The FAISS index cache (a folder store's)."""
        return self._folder() / INDEX_NAME

    def _folder(self) -> Path:
        if self.path is None:
            raise StoreError("a PostgreSQL store has no folder", path=self.location)
        return self.path

    @property
    def generation(self) -> int:
        with self._db.guard():
            return self._db.generation()

    @property
    def fingerprint(self) -> str | None:
        """The embedding model of every vector in this store (None until the first character)."""
        with self._db.guard():
            return self._stored_fingerprint()

    def _stored_fingerprint(self) -> str | None:
        """Inside a guard: the store's model; StoreError when its record is gone though characters are
        stored (damage: every search would find nothing, and another model's embeddings could enter)."""
        fingerprint = self._db.meta("fingerprint")
        if fingerprint is None and rows.count(self._db):
            raise StoreError("the store's record of its model (meta 'fingerprint') is missing though it holds "
                             "characters: the database is damaged (`castkeep verify` reports it)", path=self.location)
        return fingerprint

    @property
    def index_kind(self) -> str:
        return self._index.kind

    def set_index_kind(self, kind: str) -> None:
        """Choose exact (flat) search or an approximate index (hnsw, ivf) for large stores."""
        self._index.set_kind(kind)

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
        from ..landmarks.model_pack import ModelPack
        from .analyzer import FaceAnalyzer

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

    def _check_writable(self) -> None:
        """Before slow work (embedding photos) that ends in a change: a read-only store says so first."""
        if self.read_only:
            raise StoreError(READ_ONLY_MESSAGE, path=self.location)

    def _check_fingerprint(self, fingerprint: str) -> str:
        """Inside a guard: embeddings of another model may not enter (or query) this store. Returns the
        store's own spelling of the space (the same weights in a renamed pack folder are the same space)."""
        stored = self._stored_fingerprint()
        if stored is None:
            return fingerprint
        if not same_space(stored, fingerprint):
            raise StoreError(f"this store holds embeddings from model '{stored}', not '{fingerprint}'; "
                             f"embeddings of different models cannot be mixed (use --models to pick "
                             f"the store's pack, or another --store)", path=self.location)
        return stored

    def _check_dim(self, character: Character) -> None:
        """Inside a guard: every embedding of the store's model has the size its vectors have (a crafted
        file may claim the store's model with embeddings of another size)."""
        fingerprint = self._stored_fingerprint()
        dim = None if fingerprint is None else rows.stored_dim(self._db, fingerprint)
        sizes = {r.embeddings[fingerprint].size for r in character.references if fingerprint in r.embeddings}
        if dim is not None and sizes - {dim}:
            raise StoreError(f"'{character.name}' has {'/'.join(map(str, sorted(sizes)))}-value embeddings from "
                             f"model '{fingerprint}', whose embeddings in this store have {dim}: the file is damaged "
                             f"or crafted", path=self.location)

    # ------------------------------------------------------------------ reading
    def get(self, name: str, *, crops: bool = False) -> Character:
        """The character called `name` (case-insensitive); UnknownCharacterError if none. Its
        references' face crops are read only with `crops`."""
        key = name_key(name)
        with self._db.guard():
            found = rows.read_characters(self._db, "WHERE name_key = ?", (key,), crops=crops)
        if not found:
            raise UnknownCharacterError(f"no character named '{normalize_name(name)}' in this store "
                                        f"(see `castkeep list`)")
        return found[0]

    def __contains__(self, name: str) -> bool:
        key = name_key(name)
        with self._db.guard():
            return rows.name_taken(self._db, key)

    def characters(self) -> list[Character]:
        """Every stored character with its references, by name."""
        with self._db.guard():
            return rows.read_characters(self._db)

    def names(self) -> list[str]:
        with self._db.guard():
            return rows.names(self._db)

    def __len__(self) -> int:
        with self._db.guard():
            return rows.count(self._db)

    # ------------------------------------------------------------------ changes
    def register(self, name: str, images: Sequence[Any], *, description: str = "",
                 tags: Iterable[str] = (), force: bool = False, face: int | None = None,
                 strict: bool = False, progress: Callable[[Any], Any] | None = None,
                 labels: Mapping[str, str] | None = None) -> Character:
        """Register a character from 1–13 reference photos (paths, `path:N`, arrays or PIL images).

        Every photo must hold a face (one, or name one with `face` / `path:N`). Photos the quality gate
        refuses, or with several faces none of which is clearly the person of the other photos, are left
        out with a warning while at least one photo is usable (`strict`: refused, nothing registered);
        borderline photos are kept with a warning. A photo that is not the same person as the others
        raises ImpostorReferenceError. `force` keeps refused photos (impostors flagged). Warnings
        (left-out and borderline photos, duplicate registration, repeated photo) are in the returned
        character's `warnings`. `labels` maps a photo's path to the source name to record for it (the
        server's uploads: the client's file name, not the temporary file holding its bytes).
        """
        name = normalize_name(name)
        self._check_writable()
        if name in self:
            raise DuplicateCharacterError(f"a character named '{self.get(name).name}' already exists "
                                          f"(use add-refs to give it more photos, or remove it first)")
        tags = clean_tags(tags)
        description = clean_description(description)
        analyzer = self._get_analyzer(dense=True)
        with self._db.guard():
            self._check_fingerprint(analyzer.fingerprint)
        references, warnings = embed_references(analyzer, images, face=face, force=force, strict=strict,
                                                progress=progress, labels=labels)
        gate_impostors(references, set(range(len(references))), force, warnings)
        embeddings = np.stack([r.embedding for r in references])
        weights = np.array([r.quality for r in references])
        character = Character(name=name, vector=combine(embeddings, weights), fingerprint=analyzer.fingerprint,
                              description=description, tags=tags, references=references,
                              baseline=baseline_of(embeddings, weights))
        return self._insert(character, warnings, taken=f"a character named '{name}' already exists")

    def import_file(self, path: str | os.PathLike, *, name: str | None = None) -> Character:
        """Add a character from an exported file; `name` renames it. The file must hold the
        store's model space for every reference (as its primary space or as another one)."""
        from .portable import read_character

        character = read_character(Path(path))
        if name is not None:
            character.name = normalize_name(name)
        stored = self.fingerprint
        if stored is not None:  # the store's model under another pack folder's name is the store's space
            for spelling in [f for f in character.spaces if f != stored and same_space(f, stored)]:
                character.rename_space(spelling, stored)
        if stored is not None and stored != character.fingerprint:
            if not all(stored in r.embeddings for r in character.references):
                raise StoreError(f"this store holds embeddings from model '{stored}', and the file has "
                                 f"{'only some' if stored in character.spaces else 'none'} of "
                                 f"'{character.name}''s references in that space; embeddings of different models "
                                 f"cannot be mixed (add them where it was exported: `castkeep reembed "
                                 f"{character.name} --models {pack_of(stored)}`, or import into another --store)",
                                 path=path)
            character = character.with_primary(stored)
        character.refit()
        return self._insert(character, [], taken=f"a character named '{character.name}' already exists "
                                                 f"(import it under another name with --name)")

    def _insert(self, character: Character, warnings: list[str], *, taken: str) -> Character:
        """Store a new character in one transaction; `taken` is the message when its name is."""
        key = name_key(character.name)
        with self._db.guard():
            with self._db.write():
                # Re-checked under the lock: another process may have won the race.
                character.rename_space(character.fingerprint, self._check_fingerprint(character.fingerprint))
                self._check_dim(character)
                if rows.name_taken(self._db, key):
                    raise DuplicateCharacterError(taken)
                if self._stored_fingerprint() is None:
                    self._db.set_meta("fingerprint", character.fingerprint)
                    self._db.set_meta("dim", str(character.vector.size))
                character_id = rows.insert_character(self._db, character, key, utc_now())
                generation = self._db.bump_generation()
        self._index.apply(generation, add={character_id: character.vector})
        stored = self.get(character.name)
        try:
            warnings = warnings + self._duplicate_warnings(character.vector, character.references, character_id)
        except StoreError as exc:  # committed already: damage elsewhere in the store must not turn it into a failure
            warnings = warnings + [f"could not compare '{stored.name}' with the stored characters: {exc}"]
        stored.warnings = warnings
        return stored

    def add_refs(self, name: str, images: Sequence[Any], *, force: bool = False, face: int | None = None,
                 strict: bool = False, progress: Callable[[Any], Any] | None = None,
                 labels: Mapping[str, str] | None = None) -> Character:
        """Give an existing character more reference photos; its vector and baseline are refit. Unusable
        photos are left out (or, with `strict`, refused) and `labels` used as in `register`."""
        existing = self.get(name)
        self._check_writable()
        analyzer = self._get_analyzer(dense=True)
        with self._db.guard():
            fingerprint = self._check_fingerprint(analyzer.fingerprint)
        new_refs, warnings = embed_references(analyzer, images, face=face, force=force, strict=strict,
                                              progress=progress, anchors=existing.references, labels=labels)
        for ref in new_refs:
            ref.rename_space(analyzer.fingerprint, fingerprint)
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
        gate_impostors(combined, set(range(len(existing.references), len(combined))), force, warnings)
        assert existing.id is not None
        now = utc_now()
        with self._db.guard():
            with self._db.write():
                if not rows.character_exists(self._db, existing.id):
                    raise UnknownCharacterError(f"character '{existing.name}' was removed meanwhile")
                rows.insert_references(self._db, existing.id, fresh, now)
                # Refit from what is stored now (another process may have added references too).
                space = self._refit_space(existing.id, fingerprint)
                rows.write_space(self._db, existing.id, space, now, primary=True)
                generation = self._db.bump_generation()
        self._index.apply(generation, remove=[existing.id], add={existing.id: space.vector})
        character = self.get(existing.name)
        for other in character.spaces.values():
            if other.references < len(character.references):
                warnings.append(f"the new references are not in {other.pack}'s space yet: add them "
                                f"with `castkeep reembed {character.name} --models {other.pack}`")
        character.warnings = warnings
        return character

    def _refit_space(self, character_id: int, fingerprint: str) -> Space:
        """Inside a write: a character's space fitted from its references stored in it now."""
        found = rows.space_embeddings(self._db, character_id, fingerprint)
        assert found is not None  # callers have just stored embeddings in this space
        return Space.fit(fingerprint, *found)

    def remove(self, name: str) -> str:
        """Remove character `name`; returns its stored name. Its rows are not decoded, so a character
        damaged outside castkeep can still be removed."""
        key = name_key(name)
        with self._db.guard():
            with self._db.write():
                found = rows.find(self._db, key)
                if found is None or not rows.delete_character(self._db, found[0]):
                    raise UnknownCharacterError(f"no character named '{normalize_name(name)}' in this store "
                                                f"(see `castkeep list`)")
                generation = self._db.bump_generation()
        self._index.apply(generation, remove=[found[0]])
        return found[1]

    def _duplicate_warnings(self, vector: np.ndarray, references: list[Reference],
                            exclude_id: int | None) -> list[str]:
        """A new character that looks like a stored one, or shares a photo with one."""
        warnings = []
        hits = [h for h in self._search(vector, 2) if h.id != exclude_id]
        if hits and hits[0].same:
            warnings.append(f"looks like existing character '{hits[0].name}' (cosine {hits[0].score:.2f}); "
                            f"is this a duplicate registration?")
        with self._db.guard():
            owners = rows.owners_of_photos(self._db, [r.sha256 for r in references])
        for other, other_id in owners:
            if other_id != exclude_id:
                warnings.append(f"a reference photo is already a reference of '{other}'")
        return warnings

    # ------------------------------------------------------------------ queries
    def _query_vector(self, source: Any, face: int | None = None) -> np.ndarray:
        if isinstance(source, np.ndarray) and source.ndim == 1:
            return normalise(source)
        if isinstance(source, (list, tuple)) and source and isinstance(source[0], (float, int)):
            return normalise(np.asarray(source, dtype=np.float32))
        analyzer = self.analyzer
        with self._db.guard():
            self._check_fingerprint(analyzer.fingerprint)
        source, spec_face = parse_image_spec(source)
        return normalise(analyzer.embed(source, face=spec_face if spec_face is not None else face).embedding)

    def _search(self, vector: np.ndarray, k: int) -> list[_Hit]:
        index = self._index.current()
        if len(index) == 0 or k <= 0:
            return []
        if vector.shape[0] != index.dim:
            raise StoreError(f"query embedding has {vector.shape[0]} values; this store's have {index.dim}")
        scores, ids = index.search(vector, min(k, len(index)))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        with self._db.guard():
            names = rows.names_by_id(self._db, [i for i, _ in found])
        threshold = similarity.SAME_PERSON_THRESHOLD
        return [_Hit(i, names[i][0], s, s >= threshold) for i, s in found if i in names]

    def identify(self, source: Any, *, k: int = 5, face: int | None = None,
                 fpir: float = DEFAULT_FPIR) -> list[Match]:
        """The k stored characters closest to a face (image, `path:N`, or a 1-D embedding), best first.
        `same` is judged at the open-set threshold for this store's size (identity/open_set.py): about
        `fpir` of searches by faces not enrolled name someone, however many characters are stored."""
        if self.fingerprint is None and not isinstance(source, np.ndarray):
            return []
        vector = self._query_vector(source, face)
        hits = self._search(vector, k)
        threshold = open_set_threshold("arcface", "photo", len(self), fpir).threshold
        return [Match(h.name, h.score, float(probability(h.score)), h.score >= threshold) for h in hits]

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

    # ------------------------------------------------------------------ embedding spaces
    def vector(self, name: str, space: str | Any | None = None) -> np.ndarray:
        """Character `name`'s vector in one embedding space: a fingerprint, a pack name (e.g.
        "buffalo_l"), a ModelPack, or None for the store's primary space. UnknownSpaceError, naming
        the `castkeep reembed` command that adds it, when the character has no such space."""
        character = self.get(name)
        if space is None:
            return character.vector
        return character.space(space if isinstance(space, str) else space.fingerprint).vector

    def reembed(self, name: str | None, *, models: str | os.PathLike | Any, device: str | None = None,
                progress: Callable[[Any], Any] | None = None) -> ReembedReport:
        """Add the embedding space of model pack `models` (a name, folder or ModelPack) to character
        `name`, or to every character with None, from the references' stored face crops.

        References without a crop (stored before crops were kept) are re-read from their original
        photo when it is unchanged, else listed in the report as missing; the space is then fitted
        from the references that could be embedded, and the character keeps its other spaces. Only
        references not yet in that space are embedded, so a second run completes a partial one.
        Each character's new space is stored in one transaction, taken after its embedding.
        """
        from ..landmarks.detection import FaceDetector
        from ..landmarks.model_pack import ModelPack
        from .embedder import ArcFaceEmbedder

        if name is not None:
            self.get(name)  # UnknownCharacterError before any model is loaded
        self._check_writable()
        pack = models if isinstance(models, ModelPack) else ModelPack.from_pretrained(
            models, device=device or self._device)
        with self._db.guard():  # the store's own spelling when the pack is its primary model
            stored = self._db.meta("fingerprint")
        fingerprint = stored if stored is not None and same_space(stored, pack.fingerprint) else pack.fingerprint
        embedder = ArcFaceEmbedder(pack.model("recognition"))
        detectors: list[FaceDetector] = []

        def detector() -> FaceDetector:  # loaded only for references without a crop
            if not detectors:
                detectors.append(FaceDetector(pack.model("detection")))
            return detectors[0]

        with self._db.guard():
            keys = [name_key(name)] if name is not None else [name_key(n) for n in rows.names(self._db)]
        report = ReembedReport(fingerprint=fingerprint, pack=pack.name)
        for key in keys:
            with self._db.guard():
                found = rows.read_characters(self._db, "WHERE name_key = ?", (key,), crops=True)
            if not found:
                continue  # removed meanwhile
            # A space the character has under another spelling (an earlier run from a renamed folder) is this one.
            space = next((f for f in found[0].spaces if same_space(f, fingerprint)), fingerprint)
            pending = embed_character(found[0], space, embedder, detector, progress)
            report.characters.append(pending.outcome)
            if pending.embeddings:
                self._store_space(found[0], space, pending.embeddings, pending.new_crops)
        return report

    def _store_space(self, character: Character, fingerprint: str, embeddings: dict[int, np.ndarray],
                     new_crops: dict[int, Any]) -> None:
        """One transaction: new embeddings (of the references still there), crops re-made from
        photos, and the space refitted from everything stored in it now."""
        assert character.id is not None
        with self._db.guard():
            with self._db.write():
                present = rows.reference_ids(self._db, character.id)
                rows.add_embeddings(self._db, [(ref_id, fingerprint, vector) for ref_id, vector in embeddings.items()
                                               if ref_id in present])
                for ref_id, crop in new_crops.items():
                    if ref_id in present:
                        rows.set_crop(self._db, ref_id, crop)
                if rows.space_embeddings(self._db, character.id, fingerprint) is None:
                    return  # every reference was removed meanwhile
                space = self._refit_space(character.id, fingerprint)
                primary = fingerprint == self._db.meta("fingerprint")
                rows.write_space(self._db, character.id, space, utc_now(), primary=primary)
                if primary:  # (only after damage: every reference is embedded in it at registration)
                    self._db.bump_generation()
        if primary:
            self._index.forget()

    # ------------------------------------------------------------------ files and upkeep
    def export(self, name: str, out_path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write character `name` to a portable file (or into a folder as `<name>.castkeep.json`).
        Never inside the store's folder; an existing file that is not a castkeep export needs `overwrite`."""
        from .portable import write_character

        return write_character(self.get(name, crops=True), Path(out_path), protected=self.path,
                               overwrite=overwrite)

    def verify(self, *, repair_index: bool = True) -> dict[str, Any]:
        """Check the database (SQLite integrity, every row decodes, vectors match their references)
        and the index cache; with `repair_index`, a stale or corrupt index is rebuilt (never in a
        read-only store: the report's `read_only` says so)."""
        report = integrity.verify(self._db, self._index, self.location,
                                  repair_index=repair_index and not self.read_only)
        report["read_only"] = self.read_only
        return report

    def rebuild_index(self) -> dict[str, Any]:
        """Rebuild the search (the FAISS cache, or a PostgreSQL store's pgvector column) from the database now."""
        return self._index.rebuild()
