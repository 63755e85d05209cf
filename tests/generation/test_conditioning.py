"""Which embedding space an adapter conditions on (by its file name or `--conditioning-models`), and the
character's vector in it, on real store records (no models needed)."""

from __future__ import annotations

import numpy as np
import pytest

from castkeep.errors import ConfigError, ModelNotFoundError, UnknownSpaceError
from castkeep.generation.conditioning import conditioning_space, known_space, space_from_option, space_vector
from castkeep.identity.characters import Character, Space

BUFFALO_S = "buffalo_s_lite:w600k_mbf.onnx:1111111111111111"
BUFFALO_L = "buffalo_l:w600k_r50.onnx:2222222222222222"
RENAMED_L = "my-models:w600k_r50.onnx:2222222222222222"  # buffalo_l unpacked under another folder name


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


def character(*fingerprints: str) -> Character:
    spaces = {f: Space(f, unit(i), {}, 2) for i, f in enumerate(fingerprints)}
    return Character("Mara", spaces[fingerprints[0]].vector, fingerprints[0], spaces=spaces)


@pytest.mark.parametrize("path, pack", [
    ("models/ip-adapter-faceid_sd15.bin", "buffalo_l"),
    ("IP-Adapter-FaceID-PlusV2_SDXL.bin", "buffalo_l"),  # case does not matter
    ("ip-adapter-faceid-portrait-v11_sd15.safetensors", "buffalo_l"),  # a converted copy
    ("ComfyUI/models/instantid/ip-adapter.bin", "antelopev2"),  # InstantID's generic name, in its folder
    ("Kolors-IP-Adapter-FaceID-Plus/ipa-faceid-plus.bin", "antelopev2"),
    ("models/ip-adapter.bin", None),  # a generic name elsewhere says nothing
    ("faceid_finetune.safetensors", None),
])
def test_known_adapters_are_recognised_by_file_name(path, pack):
    space = known_space(path)
    assert (space.pack if space else None) == pack
    if space:
        assert space.declared_by == "file name" and space.recogniser.endswith(".onnx")


def test_an_unknown_adapter_needs_the_option_and_the_option_wins():
    with pytest.raises(ConfigError, match="--conditioning-models"):
        conditioning_space("faceid_finetune.safetensors")
    told = conditioning_space("ip-adapter-faceid_sd15.bin", "antelopev2")
    assert told.pack == "antelopev2" and told.declared_by == "--conditioning-models"


def test_the_unnormalised_portrait_adapter_is_refused_with_the_alternative():
    with pytest.raises(ConfigError, match="portrait_sdxl.bin"):
        conditioning_space("models/ip-adapter-faceid-portrait_sdxl_unnorm.bin", "buffalo_l")


def test_spaces_match_by_recogniser_file_whatever_the_folder_is_called():
    adapter = "ip-adapter-faceid_sd15.bin"
    vector, fingerprint = space_vector(character(BUFFALO_S, RENAMED_L), known_space(adapter), adapter)
    assert fingerprint == RENAMED_L and np.array_equal(vector, unit(1))
    # Two copies of buffalo_l's recogniser: the one under the pack's own name.
    assert space_vector(character(BUFFALO_S, RENAMED_L, BUFFALO_L), known_space(adapter), adapter)[1] == BUFFALO_L


def test_a_character_without_the_space_gets_the_reembed_command():
    adapter = "ip-adapter-faceid_sd15.bin"
    with pytest.raises(UnknownSpaceError) as caught:
        space_vector(character(BUFFALO_S), known_space(adapter), adapter)
    message = str(caught.value)
    assert "castkeep reembed Mara --models buffalo_l" in message and "buffalo_s_lite" in message
    assert "\n" not in message


def test_the_option_takes_a_pack_name_a_fingerprint_or_a_folder(pack_dir):
    by_name = space_from_option("buffalo_s_lite")
    assert by_name.matches(BUFFALO_S) and not by_name.matches(BUFFALO_L)
    exact = space_from_option(BUFFALO_L)
    # The same weights are the same space, whatever the folder is called (the sha256 part decides).
    assert exact.matches(BUFFALO_L) and exact.matches(RENAMED_L) and not exact.matches(BUFFALO_S)
    folder = space_from_option(pack_dir)
    assert folder.fingerprint.startswith("buffalo_s_lite:w600k_mbf.onnx:") and folder.matches(folder.fingerprint)


def test_a_missing_pack_folder_is_not_taken_for_a_pack_name(tmp_path):
    with pytest.raises(ModelNotFoundError):
        space_from_option(tmp_path / "no-such-pack")
