"""What a server is started with, and the rule that keeps a server without a token on this machine."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

ENV_TOKEN = "CASTKEEP_TOKEN"
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
    that names none uses. `generation_device`/`generation_dtype`: where the diffusion pipeline runs."""

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

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigError("the token is empty: give a secret, or no token for a server on this machine only")
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
