"""What the store's database holds over time: schema versions and the migration hook (exercised
with test-only steps on stores written by today's code), the real migration from version 1 (on a
store frozen from the version-1 code), and the embedding size, which comes from the stored vectors
and is never assumed."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from castkeep.errors import StoreError
from castkeep.identity import migrations
from castkeep.identity.characters import Character, Reference
from castkeep.identity.portable import write_character
from castkeep.identity.references import combine
from castkeep.identity.store import Store
from castkeep.identity.vectors import from_blob, normalise

FIXTURES = Path(__file__).resolve().parent / "fixtures"
V1_EXPECTED = json.loads((FIXTURES / "store_v1.expected.json").read_text())
V1_FINGERPRINT = V1_EXPECTED["fingerprint"]


def character_file(folder: Path, name: str, dim: int, seed: int = 0, fingerprint: str | None = None) -> Path:
    """An exported character of a made-up `dim`-sized embedding model: three references near one
    identity vector. Importing it needs no face model."""
    rng = np.random.default_rng(seed)
    identity = rng.standard_normal(dim)
    embeddings = [normalise(identity + 0.3 * rng.standard_normal(dim)) for _ in range(3)]
    fingerprint = fingerprint or f"synthetic:{dim}d"
    references = [Reference(sha256=f"{seed:04d}{i:060d}", source_path=f"photo{i}.jpg", embedding=e,
                            quality=0.8, det_score=0.9, bbox=[0.0, 0.0, 100.0, 100.0], face_index=0,
                            pose={"yaw": 0.0}, quality_report={"usable": True}, fingerprint=fingerprint)
                  for i, e in enumerate(embeddings)]
    vector = combine(np.stack(embeddings), np.full(3, 0.8))
    character = Character(name=name, vector=vector, fingerprint=fingerprint, references=references)
    return write_character(character, folder / f"{name}.castkeep.json")


def stored_meta(store: Path, key: str) -> str | None:
    connection = sqlite3.connect(store / "castkeep.sqlite3")
    try:
        row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        connection.close()
    return None if row is None else row[0]


def character_columns(store: Path) -> list[str]:
    connection = sqlite3.connect(store / "castkeep.sqlite3")
    try:
        return [row[1] for row in connection.execute("PRAGMA table_info(characters)")]
    finally:
        connection.close()


CURRENT = migrations.SCHEMA_VERSION
NEXT = CURRENT + 1


@pytest.fixture
def current_store(tmp_path) -> Path:
    """A store written by today's code (schema version CURRENT), holding one character."""
    path = tmp_path / "store"
    with Store.open(path, create=True) as store:
        store.import_file(character_file(tmp_path, "Mara", dim=64))
    assert stored_meta(path, "schema_version") == str(CURRENT)
    return path


def add_notes_column(db) -> None:
    """A test-only step to the next version, of the kind a schema change brings."""
    db.execute("ALTER TABLE characters ADD COLUMN notes TEXT NOT NULL DEFAULT ''")


def test_migration_runs_once_and_the_store_keeps_its_characters(current_store, monkeypatch):
    calls: list[str | None] = []

    def step(db) -> None:
        calls.append(db.meta("schema_version"))
        add_notes_column(db)

    monkeypatch.setattr(migrations, "SCHEMA_VERSION", NEXT)
    monkeypatch.setattr(migrations, "MIGRATIONS", {**migrations.MIGRATIONS, CURRENT: step})
    with Store.open(current_store) as store:
        assert store.names() == ["Mara"] and store.verify()["ok"]
    assert calls == [str(CURRENT)]
    assert stored_meta(current_store, "schema_version") == str(NEXT) and "notes" in character_columns(current_store)
    with Store.open(current_store) as store:  # already current: the step does not run again
        assert store.names() == ["Mara"]
    assert calls == [str(CURRENT)]


def test_a_new_store_is_created_at_version_1_and_migrated(tmp_path, monkeypatch):
    steps: list[int] = []
    real = dict(migrations.MIGRATIONS)
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", NEXT)
    monkeypatch.setattr(migrations, "MIGRATIONS", {
        **{v: (lambda db, v=v: (steps.append(v), real[v](db))) for v in real}, CURRENT: add_notes_column})
    with Store.open(tmp_path / "new", create=True) as store:
        store.import_file(character_file(tmp_path, "Ada", dim=64))
        assert store.verify()["ok"]
    assert steps == list(range(1, CURRENT))  # every real step ran, in order
    assert stored_meta(tmp_path / "new", "schema_version") == str(NEXT)
    assert "notes" in character_columns(tmp_path / "new")


def test_a_failed_migration_leaves_the_store_at_its_old_version(current_store, monkeypatch):
    def fails_halfway(db) -> None:
        db.execute("CREATE TABLE scenes (id INTEGER PRIMARY KEY)")
        raise StoreError("step failed")

    monkeypatch.setattr(migrations, "SCHEMA_VERSION", NEXT + 1)
    monkeypatch.setattr(migrations, "MIGRATIONS", {CURRENT: add_notes_column, NEXT: fails_halfway})
    with pytest.raises(StoreError, match="step failed"):
        Store.open(current_store)
    # One transaction: the first step's column and the second's table are both rolled back.
    assert stored_meta(current_store, "schema_version") == str(CURRENT)
    assert "notes" not in character_columns(current_store)
    monkeypatch.undo()
    with Store.open(current_store) as store:
        assert store.names() == ["Mara"]


def test_a_version_without_a_step_is_refused(current_store, monkeypatch):
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", NEXT + 1)
    monkeypatch.setattr(migrations, "MIGRATIONS", {CURRENT: add_notes_column})
    with pytest.raises(StoreError, match=f"schema version {NEXT} cannot be upgraded .*no migration to "
                                         f"version {NEXT + 1}"):
        Store.open(current_store)
    assert stored_meta(current_store, "schema_version") == str(CURRENT)


@pytest.mark.parametrize("version", [str(NEXT), "17"])
def test_a_store_from_a_newer_castkeep_is_refused(current_store, version):
    connection = sqlite3.connect(current_store / "castkeep.sqlite3")
    connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match=f"store schema version {version} is not supported by this "
                                         f"castkeep .*upgrade castkeep"):
        Store.open(current_store)
    assert stored_meta(current_store, "schema_version") == version  # left as it was


def test_embedding_size_comes_from_the_stored_vectors(tmp_path):
    path = tmp_path / "store"
    with Store.open(path, create=True) as store:
        assert store.verify()["ok"]  # builds and saves the empty store's index before any vector
        imported = store.import_file(character_file(tmp_path, "Small", dim=128))
        assert imported.vector.shape == (128,)
        assert [m.name for m in store.identify(imported.vector, k=1)] == ["Small"]
    with Store.open(path) as store:
        assert store.rebuild_index()["count"] == 1
        assert [m.name for m in store.identify(imported.vector, k=1)] == ["Small"]
        with pytest.raises(StoreError, match="query embedding has 512 values; this store's have 128"):
            store.identify(np.ones(512, np.float32))
        assert store.verify()["ok"]


# -- the real migration, on a store written by the version-1 code -----------------------------------

def v1_store_from_fixture(folder: Path, faces_dir: Path) -> Path:
    """The frozen version-1 store (tests/identity/fixtures/store_v1.sql) as a store folder."""
    folder.mkdir()
    connection = sqlite3.connect(folder / "castkeep.sqlite3")
    sql = (FIXTURES / "store_v1.sql").read_text().replace("@FACES@", str(faces_dir))
    connection.executescript(sql)
    connection.close()
    assert stored_meta(folder, "schema_version") == "1"
    return folder


def table_rows(store: Path, sql: str) -> list[tuple]:
    connection = sqlite3.connect(store / "castkeep.sqlite3")
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_a_v1_store_migrates_keeps_every_character_and_answers_as_before(tmp_path, faces_dir, fast_analyzer):
    path = v1_store_from_fixture(tmp_path / "v1", faces_dir)
    v1_vectors = dict(table_rows(path, "SELECT name, vector FROM characters"))
    v1_embeddings = dict(table_rows(path, "SELECT id, embedding FROM refs"))
    with Store.open(path, analyzer=fast_analyzer) as store:
        assert stored_meta(path, "schema_version") == "2"
        assert store.names() == ["Ari", "Bill", "Mara"] and store.fingerprint == V1_FINGERPRINT
        report = store.verify()
        assert report["ok"], report["problems"]
        assert (report["characters"], report["references"]) == (3, 9)
        for character in store.characters():
            assert list(character.spaces) == [V1_FINGERPRINT]
            assert character.spaces[V1_FINGERPRINT].references == len(character.references)
            assert character.vector.tobytes() == v1_vectors[character.name]
            for reference in character.references:
                assert not reference.has_crop and reference.crop is None
                assert list(reference.embeddings) == [V1_FINGERPRINT]
                assert reference.embeddings[V1_FINGERPRINT].tobytes() == v1_embeddings[reference.id]
        mara = store.get("mara")
        assert (mara.description, mara.tags, len(mara.references)) == ("lead", ["cast", "v1"], 3)
        assert store.get("Ari").baseline["references"] == 3  # his add-refs refit survived
        # The stored vectors are compared bit for bit above. The probes are embedded afresh, so their cosines
        # are checked against the version-1 vectors read straight from the old tables (the frozen numbers
        # were recorded by an older detector; the names and verdicts they give still hold).
        def v1_cosine(probe: str, name: str) -> float:
            fresh = fast_analyzer.embed(faces_dir / probe).embedding
            return float(np.dot(fresh, np.frombuffer(v1_vectors[name], dtype=np.float32)))

        for probe, expected in V1_EXPECTED["identify"].items():
            found = [(m.name, m.score) for m in store.identify(faces_dir / probe, k=3)]
            assert [name for name, _ in found] == [name for name, _ in expected]
            assert np.allclose([score for _, score in found], [v1_cosine(probe, name) for name, _ in found],
                               atol=1e-5)
            assert np.allclose([score for _, score in found], [score for _, score in expected], atol=0.02)
        for probe, expected in V1_EXPECTED["score"].items():
            scored = store.score(faces_dir / probe, expected["name"])
            assert scored.cosine == pytest.approx(v1_cosine(probe, expected["name"]), abs=1e-5)
            assert scored.cosine == pytest.approx(expected["cosine"], abs=0.02)
            assert (scored.same, scored.closest_other.name, scored.leakage) == (
                expected["same"], expected["closest_other"], expected["leakage"])
    # The version-1 columns still hold the primary space, and the new tables a copy of it.
    assert dict(table_rows(path, "SELECT name, vector FROM characters")) == v1_vectors
    assert table_rows(path, "SELECT COUNT(*), COUNT(DISTINCT fingerprint) FROM ref_embeddings") == [(9, 1)]
    copied = table_rows(path, "SELECT c.name, v.vector, v.dim FROM character_vectors v "
                              "JOIN characters c ON c.id = v.character_id")
    assert {name: (vector, dim) for name, vector, dim in copied} == {n: (v, 512) for n, v in v1_vectors.items()}
    assert table_rows(path, "SELECT COUNT(*) FROM refs WHERE crop IS NULL AND crop_kps IS NULL") == [(9,)]


def test_a_read_only_store_that_needs_a_migration_says_so_and_stays_as_it_was(tmp_path, faces_dir):
    """Issue 13 item 11: a read-only store is never migrated (nor half-migrated); the error says why."""
    path = v1_store_from_fixture(tmp_path / "v1", faces_dir)
    before = table_rows(path, "SELECT * FROM meta ORDER BY key")
    with pytest.raises(StoreError, match="needs upgrading to schema version 2, but it is read-only"):
        Store.open(path, read_only=True)
    assert table_rows(path, "SELECT * FROM meta ORDER BY key") == before
    with Store.open(path) as store:  # where it can be written, it migrates as usual
        assert not store.read_only and len(store) == 3


def test_the_v1_migration_is_one_transaction(tmp_path, faces_dir, monkeypatch):
    path = v1_store_from_fixture(tmp_path / "v1", faces_dir)

    def fails_after_the_step(db) -> None:
        migrations.to_v2(db)
        raise StoreError("killed right after the step")

    monkeypatch.setattr(migrations, "MIGRATIONS", {1: fails_after_the_step})
    with pytest.raises(StoreError, match="killed right after the step"):
        Store.open(path)
    assert stored_meta(path, "schema_version") == "1"
    assert "crop" not in [row[1] for row in table_rows(path, "PRAGMA table_info(refs)")]
    assert table_rows(path, "SELECT name FROM sqlite_master WHERE name IN ('ref_embeddings', "
                            "'character_vectors')") == []
    monkeypatch.undo()
    with Store.open(path) as store:
        assert store.names() == ["Ari", "Bill", "Mara"] and store.verify()["ok"]


def test_reembedding_a_migrated_store_rereads_unchanged_photos_and_reports_the_rest(
        tmp_path, faces_dir, second_pack):
    from castkeep.landmarks.model_pack import ModelPack

    path = v1_store_from_fixture(tmp_path / "v1", faces_dir)
    gallery = faces_dir / "lfw_gallery"
    moved = tmp_path / "moved" / "Ari_Fleischer_0003.jpg"           # no longer there
    edited = tmp_path / "Bill_Gates_0001.jpg"                        # there, but other bytes
    shutil.copy(gallery / "Bill_Gates" / "Bill_Gates_0004.jpg", edited)
    connection = sqlite3.connect(path / "castkeep.sqlite3")
    with connection:
        connection.execute("UPDATE refs SET source_path = ? WHERE source_path LIKE '%Ari_Fleischer_0003.jpg'",
                           (str(moved),))
        connection.execute("UPDATE refs SET source_path = ? WHERE source_path LIKE '%Bill_Gates_0001.jpg'",
                           (str(edited),))
    connection.close()
    second = ModelPack.from_pretrained(second_pack).fingerprint
    with Store.open(path) as store:
        generation = store.generation
        report = store.reembed(None, models=second_pack)
        assert report.fingerprint == second and report.pack == "buffalo_s_copy" and not report.complete
        outcome = {c.name: c for c in report.characters}
        assert (outcome["Mara"].from_photos, outcome["Mara"].from_crops, outcome["Mara"].missing) == (3, 0, [])
        assert outcome["Ari"].from_photos == 2 and outcome["Ari"].missing == [
            {"source_path": str(moved),
             "reason": "no stored face crop, and the original photo is not there any more"}]
        assert outcome["Bill"].from_photos == 2 and outcome["Bill"].missing == [
            {"source_path": str(edited),
             "reason": "no stored face crop, and the original photo has changed (sha256 differs)"}]
        assert store.generation == generation  # another space: the primary index is untouched

        ari = store.get("Ari")
        assert [r.has_crop for r in ari.references] == [True, True, False]  # crops kept from now on
        assert (ari.spaces[V1_FINGERPRINT].references, ari.spaces[second].references) == (3, 2)
        # The same ONNX model under another name: the photos re-read give the stored embeddings (to the
        # detector's keypoints: the fixture was embedded when detection ran at 640x640 first, which moves an
        # LFW embedding to a median cosine of 0.984 to today's, 0.95 at worst; another model gives ~0).
        for reference in ari.references[:2]:
            assert float(np.dot(reference.embeddings[second], reference.embeddings[V1_FINGERPRINT])) > 0.95
        assert np.allclose(store.vector("Ari", second), combine(
            np.stack([r.embeddings[second] for r in ari.references[:2]]),
            np.array([r.quality for r in ari.references[:2]])), atol=1e-5)
        assert store.verify()["ok"]
        probe, expected = next(iter(V1_EXPECTED["identify"].items()))
        assert [m.name for m in store.identify(faces_dir / probe, k=3)] == [name for name, _ in expected]

        # Running it again embeds only what is missing: Ari's moved photo, still not there.
        again = store.reembed("Ari", models=second_pack).characters[0]
        assert (again.already, again.embedded, len(again.missing)) == (2, 0, 1)


# -- character files: every space, and files written by the version-1 code ----------------------

def two_space_file(folder: Path, name: str, *, complete: bool = True, seed: int = 3) -> Path:
    """A made-up character embedded in two 64-d spaces, A (primary) and B; with `complete=False`
    its last reference has no B embedding."""
    rng = np.random.default_rng(seed)
    identities = {"synthetic:A": rng.standard_normal(64), "synthetic:B": rng.standard_normal(64)}
    references = []
    for i in range(3):
        embeddings = {f: normalise(v + 0.3 * rng.standard_normal(64)) for f, v in identities.items()}
        if not complete and i == 2:
            del embeddings["synthetic:B"]
        references.append(Reference(sha256=f"{seed:04d}{i:060d}", source_path=f"photo{i}.jpg",
                                    embedding=embeddings["synthetic:A"], quality=0.5 + 0.1 * i, det_score=0.9,
                                    bbox=[0.0, 0.0, 100.0, 100.0], face_index=0, pose={"yaw": 0.0},
                                    quality_report={"usable": True}, fingerprint="synthetic:A",
                                    embeddings=embeddings))
    character = Character(name=name, vector=references[0].embedding, fingerprint="synthetic:A",
                          references=references)
    character.refit()
    return write_character(character, folder / f"{name}.castkeep.json")


def test_a_file_with_two_spaces_imports_into_a_store_of_either(tmp_path):
    exported = two_space_file(tmp_path, "Duo")
    with Store.open(tmp_path / "a", create=True) as store:  # a new store takes the file's primary space
        duo = store.import_file(exported)
        assert duo.fingerprint == "synthetic:A" and list(duo.spaces) == ["synthetic:A", "synthetic:B"]
        assert [s.references for s in duo.spaces.values()] == [3, 3]
        in_b = store.vector("Duo", "synthetic:B")
        with pytest.raises(StoreError, match="'Duo' has 2 spaces matching 'synthetic' .*give the full fingerprint"):
            store.vector("Duo", "synthetic")
        assert store.verify()["ok"]
    # In a store of space B, the file's B space becomes the character's primary space...
    with Store.open(tmp_path / "b", create=True) as store:
        store.import_file(character_file(tmp_path, "Anchor", dim=64, fingerprint="synthetic:B"))
        duo = store.import_file(exported)
        assert duo.fingerprint == "synthetic:B" and set(duo.spaces) == {"synthetic:A", "synthetic:B"}
        assert np.allclose(duo.vector, in_b, atol=1e-6)
        assert [m.name for m in store.identify(in_b, k=1)] == ["Duo"]
        assert store.verify()["ok"]
        # ...but not when one of its references lacks that space.
        with pytest.raises(StoreError, match="the file has only some of 'Partial''s references in that space; "
                                             "embeddings of different models cannot be mixed"):
            store.import_file(two_space_file(tmp_path, "Partial", complete=False))
        assert store.names() == ["Anchor", "Duo"]


def test_a_file_exported_by_the_v1_code_still_imports(tmp_path):
    old = FIXTURES / "Ari_v1.castkeep.json"
    document = json.loads(old.read_text())
    assert document["version"] == 1 and "spaces" not in document
    with Store.open(tmp_path / "s", create=True) as store:
        ari = store.import_file(old)
        assert ari.fingerprint == V1_FINGERPRINT and list(ari.spaces) == [V1_FINGERPRINT]
        assert len(ari.references) == 3 and not any(r.has_crop for r in ari.references)
        assert np.allclose(ari.vector, from_blob(base64.b64decode(document["vector"])), atol=1e-6)
        assert store.verify()["ok"]
