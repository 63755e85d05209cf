"""The durable job list: one `job.json` per run folder, rewritten atomically at every change of a job's state,
read back when a server starts.

Why files in the run folders rather than a SQLite table: the run folder already is the job (its request,
plan, outputs, ledger), so a record beside them cannot disagree with them, moving or deleting a run folder
moves or deletes its job, and one writer (the one server the runs lock allows) needs no database's
concurrency. Each write is a rename of a complete file (utils.write_json_atomic), so a `kill -9` leaves the
previous record or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..utils import write_json_atomic

log = logging.getLogger("castkeep.serve")

JOB_FILE = "job.json"  # in each run folder: what was asked, its state, and how it ended
RECORD_VERSION = 1


def save(run_dir: Path, record: dict[str, Any]) -> None:
    """Write a job's record (its snapshot and bookkeeping); a failure is logged, the job goes on."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / JOB_FILE, {"version": RECORD_VERSION, **record})
    except OSError:
        log.exception("cannot write %s", run_dir / JOB_FILE)


def load_all(runs_root: Path) -> list[dict[str, Any]]:
    """Every readable job record under `runs_root`, in submission order (an older server's records, without
    a sequence number, by id: ids start with their submission time)."""
    records = []
    for path in sorted(runs_root.glob(f"*/{JOB_FILE}")):
        if path.parent.is_symlink():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping the job record %s: %s", path, exc)
            continue
        if not isinstance(record, dict) or record.get("id") != path.parent.name or "kind" not in record:
            log.warning("skipping the job record %s: not a job of this server", path)
            continue
        records.append(record)
    return sorted(records, key=lambda r: (int(r.get("sequence") or 0), str(r["id"])))
