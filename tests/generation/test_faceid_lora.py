"""The FaceID LoRA's per-run weight (`--lora-scale`) and `--id-scale 0` switching LoRA and identity off,
checked on the tiny SD1.5 pipeline's peft layers and in its pixels."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_pipelines import STEPS, unit

from castkeep.errors import ConfigError
from castkeep.generation.config import GenerationConfig
from castkeep.generation.faceid_lora import effective_lora_scale, faceid_lora_adapters
from castkeep.generation.runner import generate_images

pytestmark = pytest.mark.generation

PROMPT = "portrait photo of a person"


def draw(loaded, vector=None, **settings) -> np.ndarray:
    config = GenerationConfig(PROMPT, seed=11, steps=STEPS, **settings)
    images, _ = generate_images(loaded, config, unit(0) if vector is None else vector, [11], 64, 64)
    return np.asarray(images[0])


def lora_scalings(unet) -> set[float]:
    from peft.tuners.lora import LoraLayer

    return {round(float(layer.scaling[name]), 6) for layer in unet.modules() if isinstance(layer, LoraLayer)
            for name in layer.scaling if name.startswith("faceid_")}


def test_lora_scale_sets_the_peft_weight_and_changes_the_pixels(loaded):
    """Kills: ignoring --lora-scale (the peft scaling and the image stay at weight 1)."""
    assert faceid_lora_adapters(loaded.pipe) == ["faceid_0"]
    try:
        full = draw(loaded, lora_scale=1.0)
        layers = lora_scalings(loaded.pipe.unet)
        reduced = draw(loaded, lora_scale=0.6)
        scaled = lora_scalings(loaded.pipe.unet)
        assert len(layers) == len(scaled) == 1 and next(iter(scaled)) == pytest.approx(0.6 * next(iter(layers)))
        assert not np.array_equal(full, reduced)
        assert np.array_equal(draw(loaded, lora_scale=1.0), full)  # back at 1: the same image again
    finally:
        draw(loaded)  # the module's pipeline back at the default weight


def test_id_scale_zero_is_the_base_model_without_lora_or_identity(loaded, tiny_models):
    """At --id-scale 0 the output is what the base pipeline alone draws (no adapter, no LoRA), whatever
    --lora-scale says. Kills: leaving the FaceID LoRA on at id-scale 0."""
    import torch
    from diffusers import StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(tiny_models["pipeline"], local_files_only=True)
    base.set_progress_bar_config(disable=True)
    expected = np.asarray(base(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=7.5, width=64, height=64,
                               generator=torch.Generator("cpu").manual_seed(11)).images[0])
    try:
        off = draw(loaded, id_scale=0.0, lora_scale=0.7)
        assert lora_scalings(loaded.pipe.unet) == {0.0}
        assert np.array_equal(off, draw(loaded, vector=unit(5), id_scale=0.0))
        np.testing.assert_allclose(off.astype(int), expected.astype(int), atol=1)
        assert not np.allclose(draw(loaded, id_scale=0.8).astype(int), expected.astype(int), atol=1)
    finally:
        draw(loaded)


def test_lora_scale_is_validated_and_recorded():
    assert effective_lora_scale(0.0, 0.7) == 0.0 and effective_lora_scale(0.5, 0.7) == 0.7
    assert GenerationConfig(PROMPT, lora_scale=0.65).to_dict()["lora_scale"] == 0.65
    with pytest.raises(ConfigError, match="--lora-scale"):
        GenerationConfig(PROMPT, lora_scale=3.0)
