"""Single-file (A1111/Civitai) checkpoints through diffusers' `from_single_file` with a local config folder,
and a custom VAE: a tiny SD1.5 pipeline written in the original key layout (tiny_pipelines), no network."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from tiny_pipelines import STEPS, build_tiny_pipeline, ldm_vae_state, save_tiny_single_file, unit

from castkeep.errors import GenerationError, ModelNotFoundError
from castkeep.generation.config import GenerationConfig
from castkeep.generation.loading import build_pipeline
from castkeep.generation.runner import generate_images
from castkeep.generation.single_file import checkpoint_kind

pytestmark = pytest.mark.generation


def same_weights(module, reference) -> bool:
    import torch  # the generate extra: the core-floors lane collects this file without it

    ours, theirs = module.state_dict(), reference.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k].reshape(v.shape), v) for k, v in theirs.items())


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    return save_tiny_single_file(tmp_path_factory.mktemp("single") / "tinymix_v1.safetensors", seed=5)


def test_a_single_file_checkpoint_loads_with_a_local_config_folder(single_file, tiny_models):
    """The weights are the file's (seed 5), not the config folder's (seed 0); the Model hash is the file's."""
    import torch

    assert checkpoint_kind(single_file) == "sd15"
    loaded = build_pipeline(str(single_file), str(tiny_models["faceid"]), device="cpu",
                            base_config=str(tiny_models["pipeline"]))
    reference, config_folders = build_tiny_pipeline(5), build_tiny_pipeline(0)
    assert same_weights(loaded.pipe.vae, reference.vae) and same_weights(loaded.pipe.text_encoder, reference.text_encoder)
    assert not same_weights(loaded.pipe.vae, config_folders.vae)
    # The UNet now carries the FaceID layers (peft renames the LoRA'd ones): its untouched layers are the file's.
    unet = loaded.pipe.unet.state_dict()
    for key in ("conv_in.weight", "down_blocks.0.resnets.0.conv1.weight", "up_blocks.0.attentions.0.proj_in.weight"):
        assert torch.equal(unet[key], reference.unet.state_dict()[key])
        assert not torch.equal(unet[key], config_folders.unet.state_dict()[key])
    assert loaded.base_model_hash == hashlib.sha256(single_file.read_bytes()).hexdigest()
    images, _ = generate_images(loaded, GenerationConfig("a face", seed=1, steps=STEPS), unit(0), [1], 64, 64)
    assert images[0].size == (64, 64)


def test_without_a_config_folder_offline_says_what_to_pass(single_file, tiny_models, tmp_path):
    # HF_HUB_OFFLINE is set (tests/conftest.py) and the reference configs are not cached.
    with pytest.raises(ModelNotFoundError, match="--base-config DIR"):
        build_pipeline(str(single_file), str(tiny_models["faceid"]), device="cpu")
    with pytest.raises(ModelNotFoundError, match="--base-config must be a diffusers folder"):
        build_pipeline(str(single_file), str(tiny_models["faceid"]), device="cpu", base_config=str(tmp_path))
    ckpt = tmp_path / "old.ckpt"
    ckpt.write_bytes(b"pickle")
    with pytest.raises(GenerationError, match="only .safetensors"):
        build_pipeline(str(ckpt), str(tiny_models["faceid"]), device="cpu")


def test_a_custom_vae_replaces_the_base_models(tiny_models, tmp_path):
    """--vae as a diffusers folder and as a bare single .safetensors file (as VAEs are published): both put
    that VAE's weights in the pipeline, and the pixels change. Kills: ignoring --vae."""
    from safetensors.torch import save_file

    other = build_tiny_pipeline(9).vae
    other.save_pretrained(tmp_path / "vae-folder")
    bare = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in ldm_vae_state(other).items()}
    save_file(bare, str(tmp_path / "vae-ft.safetensors"))
    config = GenerationConfig("a face", seed=2, steps=STEPS)
    drawn = []
    for vae in (None, str(tmp_path / "vae-folder"), str(tmp_path / "vae-ft.safetensors")):
        loaded = build_pipeline(str(tiny_models["pipeline"]), str(tiny_models["plain"]), device="cpu", vae=vae,
                                hash_base_model=False)
        assert same_weights(loaded.pipe.vae, other) == (vae is not None) and loaded.models_dict()["vae"] == vae
        drawn.append(np.asarray(generate_images(loaded, config, unit(0), [2], 64, 64)[0][0]))
    assert not np.array_equal(drawn[0], drawn[1]) and np.array_equal(drawn[1], drawn[2])
