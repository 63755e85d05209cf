"""What the store's database holds over time: schema versions and the migration hook (exercised
with test-only steps on stores written by today's code), and the embedding size, which comes from
the stored vectors and is never assumed."""

from __future__ import annotations

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
from castkeep.identity.vectors import normalise


def character_file(folder: Path, name: str, dim: int, seed: int = 0) -> Path:
    """An exported character of a made-up `dim`-sized embedding model: three references near one
    identity vector. Importing it needs no face model."""
    rng = np.random.default_rng(seed)
    identity = rng.standard_normal(dim)
    embeddings = [normalise(identity + 0.3 * rng.standard_normal(dim)) for _ in range(3)]
    fingerprint = f"synthetic:{dim}d"
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


@pytest.fixture
def v1_store(tmp_path) -> Path:
    """A store written by today's (schema version 1) code, holding one character."""
    path = tmp_path / "store"
    with Store.open(path, create=True) as store:
        store.import_file(character_file(tmp_path, "Mara", dim=64))
    assert stored_meta(path, "schema_version") == "1"
    return path


def add_notes_column(db) -> None:
    """A test-only v1 -> v2 step of the kind the next schema change will bring."""
    db.execute("ALTER TABLE characters ADD COLUMN notes TEXT NOT NULL DEFAULT ''")


def test_migration_runs_once_and_the_store_keeps_its_characters(v1_store, monkeypatch):
    calls: list[str | None] = []

    def step(db) -> None:
        calls.append(db.meta("schema_version"))
        add_notes_column(db)

    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(migrations, "MIGRATIONS", {1: step})
    with Store.open(v1_store) as store:
        assert store.names() == ["Mara"] and store.verify()["ok"]
    assert calls == ["1"]
    assert stored_meta(v1_store, "schema_version") == "2" and "notes" in character_columns(v1_store)
    with Store.open(v1_store) as store:  # already current: the step does not run again
        assert store.names() == ["Mara"]
    assert calls == ["1"]


def test_a_new_store_is_created_at_version_1_and_migrated(tmp_path, monkeypatch):
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(migrations, "MIGRATIONS", {1: add_notes_column})
    with Store.open(tmp_path / "new", create=True) as store:
        store.import_file(character_file(tmp_path, "Ada", dim=64))
    assert stored_meta(tmp_path / "new", "schema_version") == "2"
    assert "notes" in character_columns(tmp_path / "new")


def test_a_failed_migration_leaves_the_store_at_its_old_version(v1_store, monkeypatch):
    def fails_halfway(db) -> None:
        db.execute("CREATE TABLE scenes (id INTEGER PRIMARY KEY)")
        raise StoreError("step 2 -> 3 failed")

    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(migrations, "MIGRATIONS", {1: add_notes_column, 2: fails_halfway})
    with pytest.raises(StoreError, match="step 2 -> 3 failed"):
        Store.open(v1_store)
    # One transaction: step 1's column and step 2's table are both rolled back.
    assert stored_meta(v1_store, "schema_version") == "1"
    assert "notes" not in character_columns(v1_store)
    monkeypatch.undo()
    with Store.open(v1_store) as store:
        assert store.names() == ["Mara"]


def test_a_version_without_a_step_is_refused(v1_store, monkeypatch):
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(migrations, "MIGRATIONS", {1: add_notes_column})
    with pytest.raises(StoreError, match="schema version 2 cannot be upgraded .*no migration to version 3"):
        Store.open(v1_store)
    assert stored_meta(v1_store, "schema_version") == "1"


@pytest.mark.parametrize("version", ["2", "17"])
def test_a_store_from_a_newer_castkeep_is_refused(v1_store, version):
    connection = sqlite3.connect(v1_store / "castkeep.sqlite3")
    connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match=f"store schema version {version} is not supported by this "
                                         f"castkeep .*upgrade castkeep"):
        Store.open(v1_store)
    assert stored_meta(v1_store, "schema_version") == version  # left as it was


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
