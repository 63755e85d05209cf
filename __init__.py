"""castkeep: keep a character's face the same across AI-generated images."""

__version__ = "0.1.0"

from .errors import CastkeepError

__all__ = ["CastkeepError", "__version__"]
