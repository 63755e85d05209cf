"""Which weights a job may name: a Hugging Face id, or a path under the server's --models-dir. A client
never makes the server read an arbitrary file: absolute paths, `..` and anything resolving outside the
folder (symlinks included) are refused."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError
from .config import ServeConfig

# owner/name[/file-in-repo]: the shapes resolve_weights accepts as a Hub reference.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)*$")


def resolve_model(spec: str | None, models_dir: str | os.PathLike | None, default: str | None, what: str) -> str | None:
    """The weights to load for `spec` (None: the server's default, which the operator chose)."""
    if spec is None or not spec.strip():
        return default
    spec = spec.strip()
    if models_dir is not None and not Path(spec).is_absolute() and ".." not in Path(spec).parts:
        root = Path(models_dir).resolve()
        candidate = (root / spec).resolve()
        if candidate.exists():
            if not candidate.is_relative_to(root):
                raise ConfigError(f"{what}: {spec!r} leads outside the models folder")
            return str(candidate)
    if HUB_ID.match(spec) and ".." not in spec.split("/") and not Path(spec).exists():
        return spec  # a Hub id; never a path relative to the server's working folder
    where = "a file or folder under the server's --models-dir, or" if models_dir is not None else ""
    raise ConfigError(f"{what}: {spec!r} is not {where} a Hugging Face id (owner/name)")


def job_weights(config: ServeConfig, base_model: str | None, ip_adapter: str | None) -> tuple[str | None, str | None]:
    """The (base model, FaceID adapter) a job naming these runs with, by the server's rule and defaults."""
    return (resolve_model(base_model, config.models_dir, config.base_model, "base_model"),
            resolve_model(ip_adapter, config.models_dir, config.ip_adapter, "ip_adapter"))
