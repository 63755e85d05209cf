"""Character names and tags: what they may contain, and the key that makes names unique.

Names end up in file names (export), JSON and terminals, so they are NFC-normalised Unicode of
letters, digits, marks, spaces and `_-.'`, 1–64 characters with at least one letter or digit (marks
alone are invisible), with no path separators, NUL or control characters, no leading dot, combining
mark or space and no trailing space. Uniqueness is case-insensitive.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from ..errors import InvalidNameError, StoreError

MAX_NAME_LENGTH = 64
MAX_TAG_LENGTH = 64
MAX_TAGS = 64
_EXTRA = set(" _-.'")


def normalize_name(name: str) -> str:
    """The validated, NFC-normalised name; InvalidNameError says what is wrong."""
    if not isinstance(name, str):
        raise InvalidNameError(f"character name must be text, not {type(name).__name__}")
    name = unicodedata.normalize("NFC", name)
    shown = repr(name)
    if not name.strip():
        raise InvalidNameError("character name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"character name {shown} is too long ({len(name)} > {MAX_NAME_LENGTH} characters)")
    if name != name.strip():
        raise InvalidNameError(f"character name {shown} starts or ends with a space")
    if name in (".", "..") or name.startswith("."):
        raise InvalidNameError(f"character name {shown} may not start with a dot")
    if unicodedata.category(name[0])[0] == "M":  # a mark joins the text before it: nothing to attach to
        raise InvalidNameError(f"character name {shown} starts with a combining mark")
    if not any(unicodedata.category(char)[0] in ("L", "N") for char in name):  # marks alone are invisible
        raise InvalidNameError(f"character name {shown} has no letter or digit")
    for char in name:
        if char in _EXTRA:
            continue
        category = unicodedata.category(char)
        if category[0] in ("L", "N", "M"):
            continue
        if char in "/\\":
            raise InvalidNameError(f"character name {shown} contains a path separator")
        raise InvalidNameError(f"character name {shown} contains {char!r}, which is not allowed "
                               f"(letters, digits, space and _-.' only)")
    return name


def name_key(name: str) -> str:
    """The uniqueness key: case-folded NFC (so 'Ana' and 'ANA' are the same character)."""
    return unicodedata.normalize("NFC", normalize_name(name).casefold())


def clean_tags(tags: Iterable[str] | str) -> list[str]:
    """Tags with whitespace collapsed, empty ones and repeats dropped, order kept; at most MAX_TAGS
    of MAX_TAG_LENGTH characters."""
    if isinstance(tags, str):
        tags = [tags]
    cleaned: list[str] = []
    for tag in tags:
        tag = " ".join(str(tag).split())
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise StoreError(f"tag '{tag[:20]}...' is too long ({MAX_TAG_LENGTH} characters at most)")
        if tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise StoreError(f"too many tags ({len(cleaned)} > {MAX_TAGS})")
    return cleaned


def clean_description(description: str) -> str:
    """A description as given (free text), refused when longer than MAX_DESCRIPTION_LENGTH."""
    from .fields import MAX_DESCRIPTION_LENGTH, text

    return text(description, "description", MAX_DESCRIPTION_LENGTH)
