"""`castkeep serve`: the store and the scorers over HTTP, with a web page (needs the `[serve]` extra)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import ConfigError, MissingDependencyError
from ..generation.config import DEVICES, DTYPES
from .common import device_option, models_option
from .store_commands import store_option


@click.command()
@store_option
@models_option
@device_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any other than this machine's (e.g. 0.0.0.0) needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", default=None, envvar="CASTKEEP_TOKEN", show_envvar=True,
              help="Bearer token that changes to the store (register, add references, remove, import) need.")
@click.option("--token-reads", is_flag=True, default=False, envvar="CASTKEEP_TOKEN_READS", show_envvar=True,
              help="Every /api request needs the token, reads too (the gallery, identify, jobs, run files); the page "
                   "asks for it once. / and /docs stay open: they hold no data.")
@click.option("--rate-limit", type=click.FloatRange(0, 10_000), default=0, show_default=True, envvar="CASTKEEP_RATE_LIMIT",
              show_envvar=True, metavar="N",
              help="POST requests (identify, score, compare, register, add references, import, job submissions) one "
                   "client address may send per second, after --rate-burst; more get a 429 with Retry-After. 0: no limit.")
@click.option("--rate-burst", type=click.IntRange(1, 10_000), default=10, show_default=True, metavar="B",
              help="POST requests a client may send at once before --rate-limit applies.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Requests that run the face models at once (each holds its own model sessions).")
@click.option("--max-upload-mb", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Largest request body (all files of one request together), in MiB.")
@click.option("--runs", "runs", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder that generation/storyboard jobs write their run folders into [default: runs/ beside the "
                   "store folder].")
@click.option("--models-dir", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="The only folder jobs may name local weights in (--base-model/--ip-adapter paths are relative to "
                   "it); without it, jobs name Hugging Face ids only.")
@click.option("--base-model", default=None, envvar="CASTKEEP_BASE_MODEL", show_envvar=True, metavar="ID|DIR",
              help="Weights of jobs that name none (default: castkeep's SD1.5 default).")
@click.option("--ip-adapter", default=None, envvar="CASTKEEP_IP_ADAPTER", show_envvar=True, metavar="ID|FILE",
              help="FaceID weights of jobs that name none.")
@click.option("--generation-device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="torch device of the jobs' diffusion pipeline.")
@click.option("--generation-dtype", type=click.Choice(DTYPES), default="auto", show_default=True)
def serve(store_path: Path | str | None, models: str | None, device: str, host: str, port: int, token: str | None,
          token_reads: bool, rate_limit: float, rate_burst: int, workers: int, max_upload_mb: int, runs: Path | None,
          models_dir: Path | None, base_model: str | None, ip_adapter: str | None, generation_device: str,
          generation_dtype: str) -> None:
    """Serve the store over HTTP: a web page at /, the API under /api, its documentation at /docs.

    The face models load once, at start. Reads (gallery, identify, score, compare, export) are open to
    whoever reaches the server unless --token-reads; changes need `Authorization: Bearer TOKEN` when a token
    is set. Without a token the server listens on this machine only. Jobs are kept in their run folders
    under --runs and queue again when the server restarts; one server per runs folder."""
    try:
        import uvicorn

        from ..serve import ServeConfig, create_app
        from ..serve.config import check_bind
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(f"castkeep serve needs the serve extra ({exc.name} is missing): "
                                     f"pip install 'castkeep[serve]'") from None
    try:
        check_bind(host, token)
        config = ServeConfig(store=store_path, models=models, device=device, token=token, workers=workers,
                             max_upload_bytes=max_upload_mb * 2**20, runs=runs, models_dir=models_dir,
                             base_model=base_model, ip_adapter=ip_adapter, generation_device=generation_device,
                             generation_dtype=generation_dtype, token_reads=token_reads, rate_limit=rate_limit,
                             rate_burst=rate_burst)
    except ConfigError as exc:
        raise click.UsageError(exc.args[0]) from None
    # Requests run side by side: FAISS's OpenMP threads, spin-waiting after each search of a store's few hundred
    # vectors, would take cores from the other requests' face models (a single-thread search is well under 1 ms).
    import faiss

    faiss.omp_set_num_threads(1)
    click.echo(f"loading the face models ({workers} worker(s)) ...", err=True)
    app = create_app(config)
    jobs = app.state.castkeep.jobs
    if jobs.requeued:
        click.echo(f"{len(jobs.requeued)} job(s) of {jobs.runs_root} queued again (the server stopped before they ended)",
                   err=True)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    access = ("reads and writes need the token" if token_reads else
              "writes need the token" if token else "writes are open to this machine")
    limit = f"; at most {rate_limit:g} POST/s per client (burst {rate_burst})" if rate_limit else ""
    click.echo(f"castkeep serve: {where}/ (API docs: {where}/docs); {access}{limit}", err=True)
    logging.getLogger("castkeep.serve").setLevel(logging.INFO)
    uvicorn.run(app, host=host, port=port, log_level="info")
