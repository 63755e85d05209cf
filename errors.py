"""Errors castkeep raises on bad input. Each carries a one-line message and a CLI exit code.

Every class has its own exit code (the README lists them); 2 is click's usage error, 70 an internal
error (a bug), 130 an interrupt. Subclasses narrow their parent's meaning, so scripts that only test
for "a store problem" can catch StoreError in Python.
"""

from __future__ import annotations

import os


class CastkeepError(Exception):
    """Base class: a one-line, user-facing problem (never a bug)."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(message)

    def __str__(self) -> str:
        message = super().__str__()
        # One line, always: multi-line library messages are folded.
        message = " ".join(message.split())
        return f"{self.path}: {message}" if self.path else message


class ImageError(CastkeepError):
    """The file is missing, unreadable, not an image, truncated or too large."""

    exit_code = 3


class NoFaceError(CastkeepError):
    """No face was found in an image."""

    exit_code = 4


class MultipleFacesError(CastkeepError):
    """Several faces were found where exactly one was required."""

    exit_code = 5


class FaceIndexError(CastkeepError):
    """`--face N` names a face that the image does not have."""

    exit_code = 5


class ModelNotFoundError(CastkeepError):
    """A model pack, model file or weight folder could not be found locally or downloaded."""

    exit_code = 6


class StoreError(CastkeepError):
    """The character store is corrupt, busy, or refused an operation."""

    exit_code = 7


class NoStoreError(StoreError):
    """There is no character store at the given path (read commands never create one)."""

    exit_code = 17


class IndexFileError(StoreError):
    """The FAISS index cache file is missing, truncated, tampered with or of another format. The store
    rebuilds the cache from its database when this happens, so users see it only from `VectorIndex.load`."""

    exit_code = 19


class UnknownCharacterError(StoreError):
    """No character with that name is stored."""

    exit_code = 8


class UnknownSpaceError(StoreError):
    """A character has no embeddings from the model asked for (add them with `castkeep reembed`)."""

    exit_code = 20


class InvalidNameError(StoreError):
    """A character name is empty, too long, or could escape a path."""

    exit_code = 9


class DuplicateCharacterError(StoreError):
    """A character with that name already exists."""

    exit_code = 10


class ImpostorReferenceError(CastkeepError):
    """A reference photo does not look like the same person as the others."""

    exit_code = 11


class GenerationError(CastkeepError):
    """The generation pipeline could not be built or run."""

    exit_code = 12


class ReferenceQualityError(CastkeepError):
    """A reference photo fails the quality gate (face too small, blurred, turned away...)."""

    exit_code = 13


class ConfigError(CastkeepError):
    """A generation setting is out of range or contradicts another."""

    exit_code = 14


class PlanError(ConfigError):
    """A storyboard plan file that cannot be run: unreadable, malformed, or a shot with a bad field."""

    exit_code = 21


class SizeError(ConfigError):
    """An aspect ratio or width/height the pipelines cannot use."""

    exit_code = 15


class BenchmarkInputError(CastkeepError):
    """A benchmark's input (pairs file, gallery, run folder, sizes) is unusable."""

    exit_code = 16


class MissingDependencyError(CastkeepError):
    """An optional dependency is not installed (castkeep[generate] for generation, [bench] for plots)."""

    exit_code = 18


class ServerBusyError(CastkeepError):
    """Another `castkeep serve` already holds the runs folder (one server per runs folder keeps its job list)."""

    exit_code = 22
