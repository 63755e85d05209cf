"""The storyboard ledger on its own: one driver per run folder, a take counts only with its files intact,
and a shot whose key changed forgets its takes (no model needed)."""

from __future__ import annotations

import hashlib

import pytest

from castkeep.errors import GenerationError
from castkeep.generation.storyboard.ledger import DONE, FAILED_TARGET, RUNNING, AttemptRow, Ledger


def take(run, number: int) -> AttemptRow:
    png, sidecar = run / f"t{number}.png", run / f"t{number}.json"
    png.write_bytes(b"png-%d" % number)
    sidecar.write_text("{}")
    return AttemptRow(attempt=number, seed=100 + number, file=png.name, sha256=hashlib.sha256(png.read_bytes()).hexdigest(),
                      sidecar=sidecar.name, sidecar_sha256=hashlib.sha256(b"{}").hexdigest(), passed=False,
                      value=float("-inf"), score={"flags": []})


def test_one_driver_per_folder_and_the_lock_goes_with_it(tmp_path):
    with Ledger.open(tmp_path):
        with pytest.raises(GenerationError, match="another castkeep storyboard is running"):
            Ledger.open(tmp_path)
    Ledger.open(tmp_path).close()


def test_takes_count_only_while_intact_and_a_changed_shot_starts_over(tmp_path):
    with Ledger.open(tmp_path) as ledger:
        ledger.start_session()
        assert ledger.begin_shot("s1", 1, "key-a").state == RUNNING
        for number in (0, 1):
            ledger.record_attempt("s1", "key-a", take(tmp_path, number))
        stored = ledger.attempts("s1")
        assert sorted(stored) == [0, 1] and stored[0].value == float("-inf") and stored[1].seed == 101
        (tmp_path / "t1.png").write_bytes(b"png-")  # cut short after it was recorded
        assert stored[0].intact(tmp_path) and not stored[1].intact(tmp_path)
        kept = [{"file": "t0.png", "sha256": stored[0].sha256, "sidecar": "t0.json",
                 "sidecar_sha256": stored[0].sidecar_sha256, "attempt": 0, "rank": 1}]
        ledger.finish_shot("s1", target_met=False, kept=kept)
        row = ledger.shot("s1")
        assert row.state == FAILED_TARGET and row.intact(tmp_path)
        ledger.add_round("s1")
        assert ledger.begin_shot("s1", 1, "key-a").rounds == 2 and len(ledger.attempts("s1")) == 2
        # The plan changed this shot: its takes are forgotten and it starts again at round 1.
        assert ledger.begin_shot("s1", 1, "key-b").rounds == 1 and ledger.attempts("s1") == {}
        ledger.finish_shot("s1", target_met=True, kept=kept)
        assert ledger.shot("s1").state == DONE
        ledger.count_pipeline_call(2)
        assert ledger.sessions()[0]["pipeline_calls"] == 1 and ledger.sessions()[0]["images"] == 2


def test_a_ledger_from_before_the_time_split_gains_it(tmp_path):
    """A ledger written before shots kept their time split (no `timing` column) opens, gets the column,
    and its shots read back without one; a shot finished now keeps its split, and beginning it again clears it."""
    import sqlite3

    from castkeep.generation.storyboard.ledger import _SCHEMA

    schema_1 = _SCHEMA.replace(", timing TEXT);", ");")
    assert schema_1 != _SCHEMA
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        db.executescript(schema_1)
        db.execute("INSERT INTO shots (id, number, key, state, updated_at) VALUES ('old', 1, 'k', 'done', 'then')")
    with Ledger.open(tmp_path) as ledger:
        assert ledger.shot("old").timing is None and ledger.shot("old").state == DONE
        ledger.begin_shot("new", 2, "k")
        ledger.finish_shot("new", target_met=True, kept=[], timing={"images": 1, "overhead_s": 0.05})
        assert ledger.shot("new").timing == {"images": 1, "overhead_s": 0.05}
        assert ledger.begin_shot("new", 2, "k").timing is None
