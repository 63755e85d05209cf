"""The PostgreSQL + pgvector store against the SQLite one: the same answers, `castkeep store copy` both
ways bit for bit, concurrent writers from several processes, and no password in any message. (The Store
API and CLI tests run on both backends through the `store_at` fixture.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from castkeep.errors import NoStoreError, StoreError
from castkeep.identity.store import Store
from castkeep.identity.store_copy import dump

from .test_store import gallery_split


@pytest.fixture(scope="module")
def split(faces_dir):
    return gallery_split(faces_dir)


@pytest.fixture(scope="module")
def two_space_store(tmp_path_factory, fast_analyzer, second_pack, split):
    """A SQLite store of 6 characters, one of them also embedded in a second model's space."""
    path = tmp_path_factory.mktemp("two_spaces") / "store"
    with Store.open(path, analyzer=fast_analyzer, create=True) as store:
        for name, (refs, _) in list(split.items())[:6]:
            store.register(name, refs, tags=["cast"], description=f"{name}\nline two")
        store.reembed(list(split)[0], models=second_pack)
    return path


def test_copy_sqlite_to_postgresql_to_sqlite_is_identical(two_space_store, new_postgres_url, tmp_path, invoke):
    url = new_postgres_url()
    there = invoke("store", "copy", str(two_space_store), url, "--json")
    assert there.returncode == 0, there.stderr
    report = json.loads(there.stdout)
    assert report["characters"] == 6 and report["verify"]["ok"] and "s3cret" not in there.stdout
    back = invoke("store", "copy", url, str(tmp_path / "back"))
    assert back.returncode == 0 and "verify: ok" in back.stdout, back.stderr
    with Store.open(two_space_store) as a, Store.open(url) as b, Store.open(tmp_path / "back") as c:
        original = dump(a._db)
        assert dump(b._db) == original and dump(c._db) == original  # every row, crop and vector, bit for bit
        assert len(original["character_vectors"]) == 7 and all(r[14] for r in original["refs"])  # crops too
        assert b.verify()["ok"] and c.verify()["ok"]
    again = invoke("store", "copy", str(two_space_store), url)  # never into a store that holds characters
    assert again.returncode == 7 and "not empty" in again.stderr and "s3cret" not in again.stderr


@pytest.mark.slow
def test_exact_search_gives_the_sqlite_answers(two_space_store, new_postgres_url, fast_analyzer, split):
    url = new_postgres_url()
    with Store.open(two_space_store) as source, Store.open(url, create=True) as target:
        from castkeep.identity.store_copy import copy

        copy(source, target)
    queries = [fast_analyzer.embed(p).embedding for _, held in list(split.values())[:8] for p in held[:2]]
    with Store.open(two_space_store, analyzer=fast_analyzer) as lite, Store.open(url, analyzer=fast_analyzer) as pg:
        assert pg.index_kind == "exact"
        for query in queries:
            a, b = lite.identify(query, k=6), pg.identify(query, k=6)
            assert [m.name for m in a] == [m.name for m in b]
            assert np.allclose([m.score for m in a], [m.score for m in b], atol=1e-6)
            assert [m.same for m in a] == [m.same for m in b]
        name = list(split)[1]
        photo = split[name][1][0]
        assert lite.score(photo, name).cosine == pytest.approx(pg.score(photo, name).cosine, abs=1e-6)
        pg.set_index_kind("hnsw")  # pgvector's HNSW index: the same top matches on a small store
        assert pg.verify()["ok"]
        assert all(lite.identify(q, k=3)[0].name == pg.identify(q, k=3)[0].name for q in queries)
        indexes = [r[0] for r in pg._db.execute("SELECT indexdef FROM pg_indexes WHERE indexname LIKE '%search%'")]
        assert len(indexes) == 1 and "hnsw" in indexes[0]


def test_urls_never_show_their_password_and_reads_never_create(new_postgres_url, postgres_server):
    url = new_postgres_url()
    with pytest.raises(NoStoreError) as caught:
        Store.open(url)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    missing = url.rsplit("/", 1)[0] + "/no_such_database?" + url.split("?", 1)[1]
    with pytest.raises(StoreError) as caught:
        Store.open(missing, create=True)
    assert "s3cret" not in str(caught.value) and "cannot connect" in str(caught.value)
    with Store.open(url, create=True) as store:
        assert "s3cret" not in repr(store) and store.path is None and len(store) == 0


def test_a_held_write_lock_names_its_holder(new_postgres_url, monkeypatch):
    import psycopg

    url = new_postgres_url()
    with Store.open(url, create=True):
        pass
    monkeypatch.setenv("CASTKEEP_LOCK_TIMEOUT", "0.5")
    with psycopg.connect(url.replace("s3cret", ""), autocommit=False, application_name="castkeep holder") as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", (0x63617374, 0x6B656570))
        with Store.open(url) as store:
            with pytest.raises(StoreError, match=r"store is busy: .*`castkeep holder`") as caught:
                store.set_index_kind("hnsw")
            assert store.index_kind == "exact" and "s3cret" not in str(caught.value)
        holder.rollback()


WRITER = textwrap.dedent("""
    import json, sys
    from castkeep.identity.analyzer import FaceAnalyzer
    from castkeep.identity.store import Store
    url, me, own, shared, export = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
    analyzer = FaceAnalyzer.from_pretrained(None, dense=False, landmarks_106=False)
    with Store.open(url, analyzer=analyzer) as store:
        store.register(me, own)
        store.add_refs("Shared", [shared])
        for j in range(5):
            store.import_file(export, name=f"{me} copy {j}")
""")


@pytest.mark.slow
@pytest.mark.subprocess
def test_four_processes_writing_at_once_lose_nothing(new_postgres_url, fast_analyzer, split, tmp_path):
    url = new_postgres_url()
    names = list(split)
    shared_photos = sorted((Path(split[names[0]][0][0]).parent).glob("*.jpg"))
    with Store.open(url, analyzer=fast_analyzer, create=True) as store:
        store.register("Shared", shared_photos[:2])
        store.register("Template", split[names[9]][0])
        export = store.export("Template", tmp_path)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"Writer {i}",
                                 json.dumps([str(p) for p in split[names[i + 1]][0]]), str(shared_photos[2 + i]),
                                 str(export)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(4)]
    for writer in writers:
        _, stderr = writer.communicate(timeout=300)
        assert writer.returncode == 0, stderr
    with Store.open(url) as store:
        expected = {"Shared", "Template"} | {f"Writer {i}" for i in range(4)} | {
            f"Writer {i} copy {j}" for i in range(4) for j in range(5)}
        assert set(store.names()) == expected
        shared = store.get("Shared")
        assert sorted(Path(r.source_path).name for r in shared.references) == sorted(p.name for p in shared_photos)
        assert store.generation == 2 + 4 * 7  # every change counted once
        assert store.verify()["ok"]
