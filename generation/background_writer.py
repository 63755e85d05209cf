"""One background thread that marks and writes output files while the pipeline makes the next images.

Jobs run one at a time in the order given, so a job may read the files of the jobs before it. The queue is
bounded (`max_pending` jobs waiting, each holding its image): when the writer falls behind, `submit` waits,
which keeps memory flat and says so in the caller's timing. Each job's outcome is a Future; the caller
collects it on its own thread (the ledger is recorded there, after the file is complete) and a job's error
is raised there. Leaving the `with` block on an error drops the jobs not yet started and waits for the
one running, so nothing writes behind the caller's back once it has moved on.

The watermark is array work that lets go of the GIL (provenance/watermark.py), as do PNG compression and
file writes, so the thread runs beside the pipeline's Python loop rather than taking turns with it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
MAX_PENDING = 4  # images waiting to be written (512x512 RGB: 0.75 MiB each; 1024x1024: 3 MiB)


class BackgroundWriter:
    """A single writer thread with a bounded queue; use as a context manager."""

    def __init__(self, max_pending: int = MAX_PENDING, *, name: str = "castkeep-writer") -> None:
        self._jobs: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False
        self.busy_s = 0.0  # the thread's time on jobs, all of them
        self._thread.start()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue `job` (waits while `max_pending` jobs are queued); its Future holds its result or error."""
        if self._closed:
            raise RuntimeError("the background writer is closed")
        future: Future[T] = Future()
        self._jobs.put((future, job))
        return future

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            del item
            if not future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                result = job()
            except BaseException as exc:  # the caller raises it, on its own thread
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                del job
                self.busy_s += time.perf_counter() - started

    def close(self, *, cancel: bool = False) -> None:
        """Stop the thread once it has run every queued job (`cancel`: drop those not started)."""
        if self._closed:
            return
        self._closed = True
        if cancel:
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._jobs.put(None)
        self._thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(cancel=exc_type is not None)
