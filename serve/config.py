"""What a server is started with, and the rule that keeps a server without a token on this machine."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

ENV_TOKEN = "CASTKEEP_TOKEN"
ENV_TOKEN_READS = "CASTKEEP_TOKEN_READS"
ENV_RATE_LIMIT = "CASTKEEP_RATE_LIMIT"
DEFAULT_RATE_BURST = 10  # requests a client may send at once before the rate applies (a page's burst of uploads)
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # a whole request: 13 reference photos of a few MB, or an export file
# Host names that reach only this machine; without a token, the server binds to and answers only these.
LOCAL_HOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class ServeConfig:
    """`store`: the store folder (None: $CASTKEEP_STORE or the user data folder; made when missing).
    `models`/`device`: the face model pack, as for every command. `token`: the bearer token writes need
    (None: writes are open, and the server answers only requests addressed to this machine). `workers`:
    how many requests use the face models at once (each worker holds its own model sessions).
    `max_upload_bytes`: the largest request body. `runs`: the folder generation/storyboard jobs write their run
    folders into (None: `runs` beside a store folder, else the user data folder). `models_dir`: the only folder
    jobs may name local weights in (else Hugging Face ids only). `base_model`/`ip_adapter`: the weights a job
    that names none uses. `generation_device`/`generation_dtype`: where the diffusion pipeline runs.
    `token_reads`: every /api request needs the token, reads too (the page trades it once for a session
    cookie). `rate_limit`: the POST requests (uploads, judging, job submissions) one client address may send
    per second, after a burst of `rate_burst` (0: no limit)."""

    store: str | os.PathLike | None = None
    models: str | None = None
    device: str = "cpu"
    token: str | None = None
    workers: int = 2
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    runs: str | os.PathLike | None = None
    models_dir: str | os.PathLike | None = None
    base_model: str | None = None
    ip_adapter: str | None = None
    generation_device: str = "auto"
    generation_dtype: str = "auto"
    token_reads: bool = False
    rate_limit: float = 0.0
    rate_burst: int = DEFAULT_RATE_BURST

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigError("the token is empty: give a secret, or no token for a server on this machine only")
        if self.token_reads and self.token is None:
            raise ConfigError(f"--token-reads needs a token: set one with --token or ${ENV_TOKEN}")
        if not 0 <= self.rate_limit <= 10_000:
            raise ConfigError(f"the rate limit must be between 0 (none) and 10000 requests/s, not {self.rate_limit:g}")
        if not 1 <= self.rate_burst <= 10_000:
            raise ConfigError(f"the rate burst must be between 1 and 10000 requests, not {self.rate_burst}")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be between 1 and 64, not {self.workers}")
        if self.max_upload_bytes < 1024:
            raise ConfigError(f"the upload limit must be at least 1 KiB, not {self.max_upload_bytes} bytes")

    @property
    def store_path(self) -> Path | str | None:
        """The store folder, or a PostgreSQL store's URL as given."""
        if self.store is None:
            return None
        text = str(self.store)
        return text if text.startswith(("postgresql://", "postgres://")) else Path(text).expanduser()


def is_local_host(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) reaches only this machine."""
    host = host.strip().lower().strip("[]")
    if host in LOCAL_HOST_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """A server without a token may only listen on this machine: anyone who can reach it could change
    the store otherwise."""
    if token is None and not is_local_host(host):
        raise ConfigError(f"refusing to listen on {host} without a token: anyone on the network could change the "
                          f"store. Set one with --token or ${ENV_TOKEN} (clients send `Authorization: Bearer TOKEN` "
                          f"to write), or listen on 127.0.0.1")
