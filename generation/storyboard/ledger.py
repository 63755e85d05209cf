"""The run ledger: one SQLite file in the run folder recording every shot and every written attempt.

The driver is its only writer, and holds an exclusive lock on the folder while it runs (a second
`castkeep storyboard` on the same folder is refused; the kernel drops the lock of a killed process).
An attempt row is inserted only after its PNG and sidecar are completely on disk (atomic renames), with
both files' sha256, so a file cut short by a crash or `kill -9` is never counted: a resumed run checks
each hash and regenerates what does not match. A shot is `done` (its target met, or no target) or
`failed-target` only after its kept files are written; `running` and `error` shots run again.

Every shot row carries its *key*, the hash of everything that decides its pixels and its selection (prompt,
seed, settings, characters' vectors, models): a shot whose key changed since the last run is run again
from scratch, the others are left alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import GenerationError
from ...utils import file_sha256, utc_now

LEDGER_NAME = "ledger.sqlite3"
LOCK_NAME = "ledger.lock"
SCHEMA_VERSION = 1
PENDING, RUNNING, DONE, FAILED_TARGET, ERROR = "pending", "running", "done", "failed-target", "error"
FINISHED = (DONE, FAILED_TARGET)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    pipeline_calls INTEGER NOT NULL DEFAULT 0, images INTEGER NOT NULL DEFAULT 0, outcome TEXT);
CREATE TABLE IF NOT EXISTS shots (
    id TEXT PRIMARY KEY, number INTEGER NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    rounds INTEGER NOT NULL DEFAULT 1, target_met INTEGER, kept TEXT NOT NULL DEFAULT '[]', error TEXT,
    updated_at TEXT NOT NULL, timing TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    shot TEXT NOT NULL, attempt INTEGER NOT NULL, seed INTEGER NOT NULL, key TEXT NOT NULL,
    session INTEGER NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL, sidecar TEXT NOT NULL,
    sidecar_sha256 TEXT NOT NULL, passed INTEGER NOT NULL, value REAL, score TEXT NOT NULL,
    pipeline_s REAL NOT NULL, scoring_s REAL NOT NULL, write_s REAL NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (shot, attempt));
"""


@dataclass
class AttemptRow:
    """A written attempt: its files (relative to the run folder), verdict and timings."""

    attempt: int
    seed: int
    file: str
    sha256: str
    sidecar: str
    sidecar_sha256: str
    passed: bool
    value: float  # what ranks it: the judge's log-odds, -inf without a face
    score: dict[str, Any]
    pipeline_s: float = 0.0
    scoring_s: float = 0.0
    write_s: float = 0.0
    session: int = 0

    def intact(self, run_dir: Path) -> bool:
        return _intact(run_dir / self.file, self.sha256) and _intact(run_dir / self.sidecar, self.sidecar_sha256)


@dataclass
class ShotRow:
    id: str
    number: int
    key: str
    state: str
    rounds: int = 1
    target_met: bool | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)  # {file, sha256, sidecar, sidecar_sha256, attempt, rank}
    error: str | None = None
    timing: dict[str, Any] | None = None  # where the time went in the session that finished it (shot_run.py)

    def intact(self, run_dir: Path) -> bool:
        """Finished, and every kept file is on disk with the content recorded."""
        return self.state in FINISHED and bool(self.kept) and all(
            _intact(run_dir / k["file"], k["sha256"]) and _intact(run_dir / k["sidecar"], k["sidecar_sha256"])
            for k in self.kept)


def _intact(path: Path, sha256: str) -> bool:
    try:
        return path.is_file() and file_sha256(path) == sha256
    except OSError:
        return False


class Ledger:
    """The run folder's ledger, opened by the one process that drives the run."""

    def __init__(self, run_dir: Path, connection: sqlite3.Connection, lock_fd: int) -> None:
        self.run_dir = run_dir
        self._db = connection
        self._lock_fd = lock_fd
        self.session = 0

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> Ledger:
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenerationError(f"cannot create the run folder ({exc.strerror})", path=run_dir) from None
        lock_fd = _lock(run_dir / LOCK_NAME)
        try:
            connection = sqlite3.connect(run_dir / LEDGER_NAME, isolation_level=None, timeout=30)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing committed
            connection.executescript(_SCHEMA)
            _add_missing_columns(connection)
            version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None:
                connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) > SCHEMA_VERSION:
                raise GenerationError(f"this run's ledger is of a newer castkeep (schema {version[0]})",
                                      path=run_dir / LEDGER_NAME)
        except sqlite3.DatabaseError as exc:
            os.close(lock_fd)
            raise GenerationError(f"the run ledger is unreadable ({exc}): move it away to start the run afresh",
                                  path=run_dir / LEDGER_NAME) from None
        return cls(run_dir, connection, lock_fd)

    def close(self) -> None:
        self._db.close()
        os.close(self._lock_fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------ run and sessions
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def set_meta(self, **values: Any) -> None:
        with self._transaction():
            for key, value in values.items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._db.execute("SELECT key, value FROM meta")
                if key != "schema_version"}

    def start_session(self) -> int:
        cursor = self._db.execute("INSERT INTO sessions (pid, started_at) VALUES (?, ?)", (os.getpid(), utc_now()))
        self.session = int(cursor.lastrowid or 0)
        return self.session

    def finish_session(self, outcome: str) -> None:
        self._db.execute("UPDATE sessions SET finished_at = ?, outcome = ? WHERE id = ?", (utc_now(), outcome, self.session))

    def count_pipeline_call(self, images: int) -> None:
        self._db.execute("UPDATE sessions SET pipeline_calls = pipeline_calls + 1, images = images + ? WHERE id = ?",
                         (images, self.session))

    def sessions(self) -> list[dict[str, Any]]:
        cursor = self._db.execute("SELECT id, pid, started_at, finished_at, pipeline_calls, images, outcome "
                                  "FROM sessions ORDER BY id")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    # ------------------------------------------------------------------------------ shots
    def shot(self, shot_id: str) -> ShotRow | None:
        row = self._db.execute("SELECT id, number, key, state, rounds, target_met, kept, error, timing FROM shots "
                               "WHERE id = ?", (shot_id,)).fetchone()
        if row is None:
            return None
        return ShotRow(id=row[0], number=row[1], key=row[2], state=row[3], rounds=row[4],
                       target_met=None if row[5] is None else bool(row[5]), kept=json.loads(row[6]), error=row[7],
                       timing=None if row[8] is None else json.loads(row[8]))

    def begin_shot(self, shot_id: str, number: int, key: str) -> ShotRow:
        """Mark a shot running. A shot whose key changed (the plan or the models did) forgets its attempts."""
        previous = self.shot(shot_id)
        with self._transaction():
            if previous is not None and previous.key != key:
                self._db.execute("DELETE FROM attempts WHERE shot = ?", (shot_id,))
                previous = None
            rounds = previous.rounds if previous is not None else 1
            self._db.execute("INSERT OR REPLACE INTO shots (id, number, key, state, rounds, target_met, kept, error, "
                             "updated_at) VALUES (?, ?, ?, ?, ?, NULL, '[]', NULL, ?)",
                             (shot_id, number, key, RUNNING, rounds, utc_now()))
        row = self.shot(shot_id)
        assert row is not None
        return row

    def add_round(self, shot_id: str) -> None:
        """--retry-failed: one more budget of attempts (new seeds) for a shot that missed its target."""
        self._db.execute("UPDATE shots SET rounds = rounds + 1, state = ?, updated_at = ? WHERE id = ?",
                         (PENDING, utc_now(), shot_id))

    def finish_shot(self, shot_id: str, *, target_met: bool, kept: list[dict[str, Any]],
                    timing: dict[str, Any] | None = None) -> None:
        state = DONE if target_met else FAILED_TARGET
        self._db.execute("UPDATE shots SET state = ?, target_met = ?, kept = ?, error = NULL, updated_at = ?, "
                         "timing = ? WHERE id = ?", (state, int(target_met), json.dumps(kept), utc_now(),
                                                     None if timing is None else json.dumps(timing), shot_id))

    def fail_shot(self, shot_id: str, error: str) -> None:
        self._db.execute("UPDATE shots SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                         (ERROR, error, utc_now(), shot_id))

    # ------------------------------------------------------------------------------ attempts
    def record_attempt(self, shot_id: str, key: str, row: AttemptRow) -> None:
        """After both files of the attempt are on disk."""
        self._db.execute(
            "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (shot_id, row.attempt, row.seed, key, self.session, row.file, row.sha256, row.sidecar, row.sidecar_sha256,
             int(row.passed), None if row.value == float("-inf") else row.value, json.dumps(row.score),
             row.pipeline_s, row.scoring_s, row.write_s, utc_now()))

    def attempts(self, shot_id: str) -> dict[int, AttemptRow]:
        cursor = self._db.execute(
            "SELECT attempt, seed, file, sha256, sidecar, sidecar_sha256, passed, value, score, pipeline_s, "
            "scoring_s, write_s, session FROM attempts WHERE shot = ? ORDER BY attempt", (shot_id,))
        return {row[0]: AttemptRow(attempt=row[0], seed=row[1], file=row[2], sha256=row[3], sidecar=row[4],
                                   sidecar_sha256=row[5], passed=bool(row[6]),
                                   value=float("-inf") if row[7] is None else float(row[7]),
                                   score=json.loads(row[8]), pipeline_s=row[9], scoring_s=row[10], write_s=row[11],
                                   session=row[12])
                for row in cursor}

    def forget_attempt(self, shot_id: str, attempt: int) -> None:
        self._db.execute("DELETE FROM attempts WHERE shot = ? AND attempt = ?", (shot_id, attempt))


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    """Columns added since schema 1 (nullable, so an older castkeep still reads and writes the ledger)."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(shots)")}
    if "timing" not in columns:
        connection.execute("ALTER TABLE shots ADD COLUMN timing TEXT")


def _lock(path: Path) -> int:
    """An exclusive, non-blocking lock on the run folder for this process's lifetime."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock, one writer is the user's job
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise GenerationError("another castkeep storyboard is running in this folder (wait for it, or stop it)",
                              path=path.parent) from None
    return fd
