"""Store records as the API shows them: the CLI's `--json` objects plus the URLs of what a page shows."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ...identity.characters import Character

API = "/api"


def character_url(name: str) -> str:
    return f"{API}/characters/{quote(name, safe='')}"


def crop_url(name: str, reference_id: int) -> str:
    return f"{character_url(name)}/references/{reference_id}/crop.png"


def thumbnail_url(character: Character) -> str | None:
    """The crop of the character's best reference (highest quality), or None when no crop is stored."""
    with_crops = [r for r in character.references if r.has_crop and r.id is not None]
    if not with_crops:
        return None
    best = max(with_crops, key=lambda r: r.quality)
    assert best.id is not None
    return crop_url(character.name, best.id)


def summary(character: Character) -> dict[str, Any]:
    """A row of the gallery: `castkeep list --json`'s fields plus its URLs."""
    return {"name": character.name, "references": len(character.references), "baseline": character.baseline.get("mean"),
            "tags": character.tags, "description": character.description, "created_at": character.created_at,
            "url": character_url(character.name), "thumbnail_url": thumbnail_url(character)}


def detail(character: Character) -> dict[str, Any]:
    """`castkeep show --json`'s object, each reference with its id and crop URL, and the character's URLs."""
    data = character.to_dict()
    for reference, shown in zip(character.references, data["reference_details"], strict=True):
        shown["id"] = reference.id
        shown["crop_url"] = crop_url(character.name, reference.id) if reference.has_crop and reference.id else None
    data.update(url=character_url(character.name), thumbnail_url=thumbnail_url(character),
                export_url=f"{character_url(character.name)}/export")
    return data
