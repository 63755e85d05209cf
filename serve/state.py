"""What every request shares: the configuration, the worker pool, the upload spool and the store's place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import Request

from ..errors import StoreError
from ..identity.store import Store, default_store_path
from ..landmarks.model_pack import same_space
from .config import ServeConfig
from .jobs import JobManager
from .model_paths import job_weights
from .runs_lock import RunsLock
from .uploads import Spool, Uploads
from .workers import Worker, WorkerPool


@dataclass
class ServeState:
    config: ServeConfig
    pool: WorkerPool
    spool: Spool
    store_path: Path | str
    jobs: JobManager

    @property
    def store_name(self) -> str:
        """The store folder's name, or a PostgreSQL store's database name (never its URL: it may hold a password)."""
        if isinstance(self.store_path, Path):
            return self.store_path.name
        from urllib.parse import urlsplit

        return urlsplit(self.store_path).path.lstrip("/") or "postgresql"

    @classmethod
    def start(cls, config: ServeConfig) -> ServeState:
        """Open (or make) the store, check that it holds the loaded models' embeddings, load the workers."""
        store_path = config.store_path or default_store_path()
        runs = runs_root(config, store_path)
        lock = RunsLock.acquire(runs)  # before the models load: a second server on this runs folder stops at once
        try:
            pool = WorkerPool(config.models, config.device, config.workers)
        except BaseException:
            lock.release()
            raise
        try:
            with Store.open(store_path, create=True) as store:
                stored, location = store.fingerprint, store.location  # (a URL's password masked)
            if stored is not None and not same_space(stored, pool.fingerprint):
                raise StoreError(f"this store holds embeddings of '{stored}', and the models loaded are "
                                 f"'{pool.fingerprint}': start the server with the store's --models", path=location)
            jobs = JobManager(runs, store_path, config.models, config.generation_device, config.generation_dtype,
                              weights=partial(job_weights, config), runs_lock=lock)
        except BaseException:
            pool.close()
            lock.release()
            raise
        return cls(config=config, pool=pool, spool=Spool(config.max_upload_bytes), store_path=store_path, jobs=jobs)

    @contextmanager
    def store(self, worker: Worker | None = None, *, enrol: bool = False) -> Iterator[Store]:
        """The store for one request. With a worker, for queries: the worker's own store, kept open between
        requests (its search index stays loaded until the store changes; a worker serves one request at a
        time). Otherwise a store opened for this request (its own SQLite connection: SQLite serialises
        writers), with the worker's registration analyzer when `enrol`."""
        if worker is not None and not enrol:
            if worker.store is None:
                worker.store = Store.open(self.store_path, analyzer=worker.query)
            yield worker.store
            return
        analyzer: Any = None if worker is None else worker.enrol
        with Store.open(self.store_path, analyzer=analyzer) as store:
            yield store

    def close(self) -> None:
        self.jobs.close()
        self.pool.close()
        self.spool.close()


def runs_root(config: ServeConfig, store_path: Path | str) -> Path:
    """Where jobs write their run folders: --runs, else `runs` beside a store folder, else the user data folder."""
    if config.runs is not None:
        return Path(config.runs).expanduser().resolve()
    if isinstance(store_path, Path):
        return store_path.resolve().parent / "runs"
    import platformdirs

    return Path(platformdirs.user_data_dir("castkeep", appauthor=False)) / "runs"


def state(request: Request) -> ServeState:
    found: ServeState = request.app.state.castkeep
    return found


def uploads(request: Request) -> Iterator[Uploads]:
    """FastAPI dependency: this request's spool folder; error messages name its files by the client's names."""
    with state(request).spool.request() as batch:
        request.state.redact = batch.redact
        yield batch
