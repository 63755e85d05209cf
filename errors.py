"""Errors castkeep raises on bad input. Each carries a one-line message and a CLI exit code."""

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
    """The character store is missing, corrupt or refused an operation."""

    exit_code = 7


class UnknownCharacterError(StoreError):
    """No character with that name is stored."""

    exit_code = 8


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
