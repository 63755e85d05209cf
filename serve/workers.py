"""The face models, loaded once and shared by requests one worker at a time.

A worker owns a full set of model objects: its own onnxruntime sessions (SCRFD detection, ArcFace), a
MediaPipe landmarker for registration (pose from the dense mesh, as `castkeep register` has it), and a
dlib recogniser. Requests borrow a whole worker, because the objects around the sessions are not
thread-safe: SCRFD's wrapper takes its score threshold as an attribute that the detector's retry passes
change, and MediaPipe's landmarker must not be called from two threads at once. `workers` bounds how many
requests run the models at once; the rest wait their turn. The cores are shared out among the workers
(`worker_threads`), so that workers running at once do not oversubscribe the CPU.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import CastkeepError
from ..identity.analyzer import FaceAnalyzer
from ..landmarks.model_pack import ModelPack, env_threads

log = logging.getLogger("castkeep.serve")


class Worker:
    """One set of face models: `query` (detection + embedding, what identify/score/compare use, as the CLI's
    store does), `enrol` (the same sessions plus the dense mesh when the landmarker is installed, for
    registration), `recogniser` (dlib) and `references` (characters' dlib descriptors, kept between
    requests: a reference's descriptor depends only on its stored photo and face box)."""

    def __init__(self, models: str | None, device: str, threads: int | None = None) -> None:
        from ..identity.dlib_recogniser import DlibRecogniser
        from ..identity.reference_faces import ReferenceDescriptors
        from ..landmarks.mesh import resolve_landmarker

        self.pack = ModelPack.from_pretrained(models, device=device, threads=threads)
        self.query = FaceAnalyzer(self.pack, dense=False, landmarks_106=False)
        try:
            landmarker = resolve_landmarker(None, search=(self.pack.path,), download=False)
        except CastkeepError:
            landmarker = None  # keypoint pose is enough for pose coverage; never the network
        self.enrol = FaceAnalyzer(self.pack, dense=landmarker is not None, landmarks_106=False,
                                  landmarker_path=landmarker)
        self.recogniser = DlibRecogniser()
        self.references = ReferenceDescriptors(self.recogniser, self.query.detector)
        self.store: Any = None  # the store this worker queries, opened by the server on first use
        self.query.detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))  # first-run set-up, before a client waits

    @property
    def fingerprint(self) -> str:
        return self.query.fingerprint

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.enrol.close()
        self.query.close()


def worker_threads(count: int) -> int | None:
    """CPU threads each of `count` workers' model runs use: the cores shared out, at least one each (None, the
    runtime's own choice, for a single worker or when CASTKEEP_ORT_THREADS says). Each runtime would otherwise
    start a thread per core in every worker; on 2 cores with 2 workers, 1 thread each served about 6 % more
    identifies per second (`bench serve`)."""
    if count <= 1 or env_threads() is not None:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // count)


class WorkerPool:
    """`count` workers; `borrow()` lends one for the length of a `with` block."""

    def __init__(self, models: str | None, device: str, count: int) -> None:
        self._idle: queue.Queue[Worker] = queue.Queue()
        self.workers: list[Worker] = []
        threads = worker_threads(count)
        try:
            for _ in range(count):
                worker = Worker(models, device, threads)
                self.workers.append(worker)
                self._idle.put(worker)
        except BaseException:
            self.close()
            raise
        log.info("%d worker(s) ready with %s", count, self.fingerprint)

    @property
    def fingerprint(self) -> str:
        return self.workers[0].fingerprint

    @property
    def pack(self) -> ModelPack:
        return self.workers[0].pack

    @contextmanager
    def borrow(self) -> Iterator[Worker]:
        worker = self._idle.get()
        try:
            yield worker
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []
