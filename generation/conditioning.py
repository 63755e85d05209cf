"""Which face-embedding space an IP-Adapter was trained on, and a character's vector in that space.

A FaceID-style adapter only works with vectors from the recogniser it was trained on: h94's
IP-Adapter-FaceID family (SD1.5, SDXL, Plus, Plus v2, Portrait) on insightface buffalo_l's `w600k_r50`
`normed_embedding`, InstantID and Kolors' FaceID on antelopev2's `glintr100`. Another 512-d ArcFace space
(buffalo_s's MobileFaceNet, say) loads without complaint and steers the adapter toward an arbitrary face.

Known checkpoints are recognised by file name (what the model cards and ComfyUI's model folders use);
any other adapter must be told its space (`--conditioning-models PACK`). A stored space matches when its
recogniser file is the one the adapter was trained on, whatever the pack folder is called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, UnknownSpaceError
from ..landmarks.model_pack import same_space

# Insightface packs and the recognition model file that identifies their embedding space.
RECOGNISERS = {"buffalo_l": "w600k_r50.onnx", "antelopev2": "glintr100.onnx"}

# Adapter file stem (lower case, no suffix: .bin and converted .safetensors alike) → the pack it was
# trained on. h94/IP-Adapter-FaceID's model card: "insightface ... buffalo_l ... normed_embedding".
KNOWN_ADAPTERS = {
    **dict.fromkeys((
        "ip-adapter-faceid_sd15", "ip-adapter-faceid_sdxl", "ip-adapter-faceid-plus_sd15",
        "ip-adapter-faceid-plusv2_sd15", "ip-adapter-faceid-plusv2_sdxl", "ip-adapter-faceid-portrait_sd15",
        "ip-adapter-faceid-portrait-v11_sd15", "ip-adapter-faceid-portrait_sdxl"), "buffalo_l"),
    # InstantX/InstantID's adapter (ComfyUI_InstantID's models/instantid folder) and Kwai-Kolors'
    # Kolors-IP-Adapter-FaceID-Plus: antelopev2.
    "instantid-ip-adapter": "antelopev2", "ipa-faceid-plus": "antelopev2",
}
# Known adapters castkeep cannot condition correctly, and why.
UNSUPPORTED_ADAPTERS = {
    "ip-adapter-faceid-portrait_sdxl_unnorm": "was trained on buffalo_l's *unnormalised* embeddings, and castkeep "
                                              "stores unit vectors: use ip-adapter-faceid-portrait_sdxl.bin",
}
# InstantID ships its adapter as plain `ip-adapter.bin`: known only inside a folder named for it.
_FOLDER_RULES = {"instantid": "antelopev2"}


@dataclass(frozen=True)
class ConditioningSpace:
    """The embedding space an adapter takes: a pack name, optionally the exact recogniser file, and
    what said so ("file name" of a known checkpoint, or "--conditioning-models")."""

    pack: str
    recogniser: str | None
    declared_by: str
    fingerprint: str | None = None  # an exact space (from a model folder or a full fingerprint)

    def label(self) -> str:
        return f"{self.pack} ({self.recogniser})" if self.recogniser else self.pack

    def matches(self, fingerprint: str) -> bool:
        """Whether a stored space (`pack:recogniser-file:sha256-prefix`) is this one."""
        if self.fingerprint is not None:
            return same_space(fingerprint, self.fingerprint)
        pack, _, rest = fingerprint.partition(":")
        if self.recogniser is not None:
            return rest.split(":")[0] == self.recogniser
        return pack == self.pack

    def to_dict(self) -> dict[str, Any]:
        return {"pack": self.pack, "recogniser": self.recogniser, "declared_by": self.declared_by}


def _stem(path: Path) -> str:
    stem = path.name.lower()
    for suffix in (".safetensors", ".bin", ".pth", ".pt"):
        stem = stem.removesuffix(suffix)
    return stem


def known_space(adapter: str | os.PathLike[str]) -> ConditioningSpace | None:
    """The space of a known adapter file, from its name (or its folder's, for InstantID)."""
    path = Path(adapter)
    stem = _stem(path)
    pack = KNOWN_ADAPTERS.get(stem)
    if pack is None and stem == "ip-adapter":
        pack = next((p for key, p in _FOLDER_RULES.items() if key in path.parent.name.lower()), None)
    return None if pack is None else ConditioningSpace(pack, RECOGNISERS[pack], "file name")


def space_from_option(spec: str | os.PathLike[str]) -> ConditioningSpace:
    """`--conditioning-models`: a pack name (buffalo_l), a pack folder, or a full stored fingerprint."""
    text = os.fspath(spec)
    if os.sep in text or Path(text).expanduser().is_dir():  # a folder (a missing one: ModelNotFoundError)
        from ..landmarks.model_pack import ModelPack

        pack = ModelPack.from_pretrained(text)
        return ConditioningSpace(pack.name, pack.model_file("recognition").name, "--conditioning-models",
                                 fingerprint=pack.fingerprint)
    if text.count(":") == 2:
        pack_name, recogniser, _ = text.split(":")
        return ConditioningSpace(pack_name, recogniser, "--conditioning-models", fingerprint=text)
    return ConditioningSpace(text, RECOGNISERS.get(text), "--conditioning-models")


def conditioning_space(adapter: str | os.PathLike[str], option: str | os.PathLike[str] | None = None
                       ) -> ConditioningSpace:
    """The space `adapter` conditions on: `option` when given (it overrides the file name), else the
    known checkpoint's; an unknown adapter without `option` is a ConfigError."""
    why = UNSUPPORTED_ADAPTERS.get(_stem(Path(adapter)))
    if why is not None:
        raise ConfigError(f"{Path(adapter).name} {why}")
    if option is not None:
        return space_from_option(option)
    known = known_space(adapter)
    if known is None:
        raise ConfigError(f"castkeep does not know which face model {Path(adapter).name} was trained on: pass "
                          "--conditioning-models PACK (buffalo_l for h94 IP-Adapter-FaceID adapters, antelopev2 "
                          "for InstantID/Kolors)")
    return known


def space_vector(character: Any, space: ConditioningSpace, adapter_name: str) -> tuple[np.ndarray, str]:
    """The character's vector in `space` and that space's stored fingerprint; UnknownSpaceError naming
    the `castkeep reembed` command when the character has no such space."""
    found = [fingerprint for fingerprint in character.spaces if space.matches(fingerprint)]
    if len(found) > 1:  # e.g. two folders of one pack: prefer the one under the pack's own name
        found = [f for f in found if f.split(":")[0] == space.pack] or found
    if len(found) == 1:
        return np.asarray(character.spaces[found[0]].vector, dtype=np.float32), found[0]
    have = ", ".join(s.pack for s in character.spaces.values()) or "none"
    if found:
        raise UnknownSpaceError(f"'{character.name}' has {len(found)} spaces of {space.label()} ({', '.join(found)}): "
                                "pass the full fingerprint to --conditioning-models")
    raise UnknownSpaceError(f"{adapter_name} conditions on {space.label()} embeddings, which '{character.name}' "
                            f"does not have (it has: {have}): run `castkeep reembed {character.name} "
                            f"--models {space.pack}`")
