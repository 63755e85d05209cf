"""Durability of the store under kill -9 during registrations and under concurrent writers.

Both tests run the real registration path (detect, embed, quality and impostor gates, one SQLite
transaction, index cache update) in child processes on real photos.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from castkeep.identity.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

CHILD = textwrap.dedent("""
    import itertools, json, os, sys, time
    from castkeep.identity.analyzer import FaceAnalyzer
    from castkeep.identity.store import Store

    store_path, prefix, pool, go_file = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    analyzer = FaceAnalyzer.from_pretrained(None, dense=False, landmarks_106=False)
    print("ready", flush=True)
    while go_file != "-" and not os.path.exists(go_file):
        time.sleep(0.01)
    with Store.open(store_path, analyzer=analyzer, create=True) as store:
        print("opened", flush=True)
        loop = itertools.cycle(pool) if go_file == "-" else pool
        for i, refs in enumerate(loop):
            name = f"{prefix}-{i}"
            print("start", name, flush=True)
            store.register(name, refs)
            print("done", name, flush=True)
""")


def ref_pool(faces_dir: Path, count: int, offset: int = 0) -> list[list[str]]:
    """`count` identities' first three photos (a distinct person per registration)."""
    folders = sorted(p for p in (faces_dir / "lfw_gallery").iterdir() if p.is_dir())[offset:offset + count]
    return [[str(p) for p in sorted(f.glob("*.jpg"))[:3]] for f in folders]


class Child:
    """A registering subprocess whose stdout lines are collected by a thread."""

    def __init__(self, store: Path, prefix: str, pool: list[list[str]], go_file: str = "-") -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(store), prefix, json.dumps(pool), go_file],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.process.stdout, self.lines)),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.stderr))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.strip())

    def wait_for(self, word: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while word not in self.lines:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"child never said {word!r}: {self.stderr[-5:]}")
            time.sleep(0.01)

    def finish(self) -> int:
        code = self.process.wait(timeout=300)
        for thread in self._threads:
            thread.join()
        return code

    def names(self, state: str) -> set[str]:
        return {line.split(" ", 1)[1] for line in self.lines if line.startswith(f"{state} ")}


def test_kill_minus_nine_never_corrupts(tmp_path, faces_dir):
    store_path = tmp_path / "store"
    pool = ref_pool(faces_dir, 8)
    rng = random.Random(20261123)
    committed: set[str] = set()
    in_flight_kills = 0
    rounds = 20
    for round_index in range(rounds):
        child = Child(store_path, f"r{round_index}", pool)
        if round_index < 3:
            # early kills: while the store is being created or opened
            time.sleep(rng.uniform(0.0, 0.5))
            child.wait_for("ready")
            time.sleep(rng.uniform(0.0, 0.15))
        else:
            child.wait_for("opened")
            time.sleep(rng.uniform(0.0, 1.2))
        child.process.send_signal(signal.SIGKILL)
        assert child.finish() == -signal.SIGKILL
        done, started = child.names("done"), child.names("start")
        in_flight = started - done
        in_flight_kills += bool(in_flight)
        with Store.open(store_path, create=True) as store:  # a kill may come before the store exists
            report = store.verify()
            assert report["ok"], report["problems"]
            names = set(store.names())
            for character in store.characters():
                assert len(character.references) == 3  # all of a registration or none of it
        committed |= done
        # every reported commit is there; nothing else but possibly the one in flight
        assert committed <= names, committed - names
        extra = names - committed
        assert extra <= in_flight, extra
        committed |= extra
    print(f"{rounds} kills, {in_flight_kills} during a registration, {len(committed)} characters kept")
    assert in_flight_kills >= 5
    assert len(committed) > 0


def test_concurrent_registering_processes_lose_nothing(tmp_path, faces_dir):
    store_path = tmp_path / "store"  # created concurrently too
    go_file = tmp_path / "go"
    workers = 4
    per_worker = 3
    pools = [ref_pool(faces_dir, per_worker, offset=w * per_worker) for w in range(workers)]
    children = [Child(store_path, f"w{w}", pools[w], os.fspath(go_file)) for w in range(workers)]
    for child in children:
        child.wait_for("ready")
    go_file.touch()
    codes = [child.finish() for child in children]
    assert codes == [0] * workers, [c.stderr[-3:] for c in children]
    expected = {f"w{w}-{i}" for w in range(workers) for i in range(per_worker)}
    with Store.open(store_path) as store:
        assert set(store.names()) == expected
        report = store.verify()
        assert report["ok"] and report["characters"] == workers * per_worker
        assert report["generation"] == workers * per_worker
        for character in store.characters():
            assert store.identify(character.vector, k=1)[0].name == character.name
