"""The server's workers share the cores out: each worker's model sessions run on cores / workers threads (at least
one), so workers running at once do not oversubscribe the CPU; CASTKEEP_ORT_THREADS, when set, wins."""

from __future__ import annotations

import os

from castkeep.serve.workers import WorkerPool, worker_threads


def test_the_cores_are_shared_out_among_the_workers(monkeypatch):
    monkeypatch.delenv("CASTKEEP_ORT_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert worker_threads(1) is None  # one worker: the runtime's own choice, every core
    assert worker_threads(2) == max(1, cores // 2)
    assert worker_threads(64) == 1
    monkeypatch.setenv("CASTKEEP_ORT_THREADS", "3")
    assert worker_threads(2) is None  # the variable wins: ModelPack reads it


def test_each_workers_sessions_get_their_share(pack_dir, monkeypatch):
    monkeypatch.delenv("CASTKEEP_ORT_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # a 4-core machine, whatever this one has
    pool = WorkerPool(str(pack_dir), "cpu", 2)
    try:
        for worker in pool.workers:
            session = worker.query.detector.model.session
            assert worker.pack.threads == 2 and session.get_session_options().intra_op_num_threads == 2
    finally:
        pool.close()
