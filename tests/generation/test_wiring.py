"""What really enters the UNet of a real (tiny) diffusers pipeline when castkeep generates: the
identity vector, the negative prompt, the IP-Adapter scale and the FaceID LoRA, checked with forward
hooks on the pipeline's own modules, and in the pixels. Each of these tests fails when castkeep's
wiring drops or swaps one of them (see each test's docstring)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from tiny_pipelines import STEPS, PixelScorer, unit

from castkeep.generation.config import GenerationConfig
from castkeep.generation.identity_embeds import identity_embeds
from castkeep.generation.runner import GenerationRunner, Identity, generate_images

pytestmark = pytest.mark.generation

PROMPT = "portrait photo of a person"
NEGATIVE = "blurry, lowres, watermark"
ADAPTER = "faceid_0"  # the peft adapter name diffusers gives the first FaceID LoRA


@contextmanager
def unet_inputs(pipe):
    """Records every UNet call during a pipeline run: the text embeddings (batch [uncond, cond] under
    classifier-free guidance), the identity embeddings entering the image projection, and the scale each
    IP-Adapter attention processor applies."""
    calls: list[dict] = []

    def before_unet(module, args, kwargs):
        calls.append({"text": kwargs["encoder_hidden_states"].detach().clone(),
                      "ip_scales": [list(p.scale) for p in module.attn_processors.values() if hasattr(p, "to_k_ip")]})

    def before_projection(module, args):
        calls[-1]["identity"] = args[0][0].detach().clone()

    hooks = [pipe.unet.register_forward_pre_hook(before_unet, with_kwargs=True),
             pipe.unet.encoder_hid_proj.register_forward_pre_hook(before_projection)]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


def run(loaded, tmp_path, vector, **settings):
    """One generation through GenerationRunner, as the CLI runs it; returns the UNet calls and the image."""
    config = GenerationConfig(PROMPT, seed=42, steps=STEPS, **settings)
    with unet_inputs(loaded.pipe) as calls:
        result = GenerationRunner(loaded, PixelScorer()).run(config, Identity("Ada", vector), tmp_path)
    assert len(calls) == STEPS
    return calls, np.asarray(result.kept[0].image)


# ---------------------------------------------------------------------------------- identity vector
def test_identity_embeds_are_zero_negative_then_normalised_positive():
    """Kills: swapping negative and positive, dropping the L2 normalisation."""
    vector = 3.0 * unit(0)
    (embeds,) = identity_embeds(vector, guidance=True)
    assert tuple(embeds.shape) == (2, 1, 512)
    np.testing.assert_array_equal(embeds[0].numpy(), np.zeros((1, 512), np.float32))
    np.testing.assert_allclose(embeds[1, 0].numpy(), unit(0), atol=1e-6)
    (alone,) = identity_embeds(vector, guidance=False)
    assert tuple(alone.shape) == (1, 1, 512)
    np.testing.assert_allclose(alone[0, 0].numpy(), unit(0), atol=1e-6)


def test_the_unet_gets_the_normalised_identity_as_cond_and_zeros_as_uncond(loaded, tmp_path):
    """The image projection's input, every step: [uncond, cond] = [zeros, vector / |vector|].
    Kills: swapping negative and positive, dropping the L2 normalisation (the vector given has norm 3)."""
    calls, _ = run(loaded, tmp_path, 3.0 * unit(7))
    for call in calls:
        identity = call["identity"].reshape(2, -1).numpy()
        np.testing.assert_array_equal(identity[0], np.zeros(512, np.float32))
        np.testing.assert_allclose(identity[1], unit(7), atol=1e-6)


def test_a_stored_character_conditions_the_adapter_in_the_adapters_space(loaded, tmp_path, faces_dir,
                                                                         fast_analyzer, pack_dir, buffalo_l_pack):
    """The loaded adapter is h94's FaceID file (buffalo_l): the UNet gets the character's buffalo_l vector,
    not the store's primary (buffalo_s_lite) one. Kills: conditioning on `character.vector`."""
    from castkeep.generation.generator import Generator
    from castkeep.identity.store import Store

    photos = sorted((faces_dir / "lfw_gallery" / "Adrien_Brody").glob("*.jpg"))[:2]
    with Store.open(tmp_path / "store", analyzer=fast_analyzer, create=True) as store:
        store.register("Ada", photos)
        store.reembed("Ada", models=buffalo_l_pack)
        primary, conditioning = store.vector("Ada"), store.vector("Ada", "buffalo_l")
        assert not np.allclose(primary, conditioning, atol=1e-4)  # the test tells the two apart
        with unet_inputs(loaded.pipe) as calls:
            result = Generator(loaded).generate("Ada", PROMPT, store=store, analyzer=fast_analyzer, seed=1,
                                                steps=STEPS, out_dir=tmp_path / "run")
    assert result.summary["models"]["conditioning"]["fingerprint"].startswith("buffalo_l:")
    for call in calls:
        np.testing.assert_allclose(call["identity"].reshape(2, -1).numpy()[1],
                                   conditioning / np.linalg.norm(conditioning), atol=1e-6)


def test_each_of_a_batch_gets_the_identity(loaded):
    """Two images in one call: [zeros, zeros, v, v] (diffusers repeats each half per image)."""
    config = GenerationConfig(PROMPT, seed=3, steps=STEPS, batch_size=2)
    with unet_inputs(loaded.pipe) as calls:
        generate_images(loaded, config, 2.0 * unit(3), [3, 4], 64, 64)
    identity = calls[0]["identity"].reshape(4, -1).numpy()
    np.testing.assert_array_equal(identity[:2], np.zeros((2, 512), np.float32))
    np.testing.assert_allclose(identity[2:], np.stack([unit(3)] * 2), atol=1e-6)


# ---------------------------------------------------------------------------------- negative prompt
def test_the_negative_prompt_is_the_uncond_text(loaded, tmp_path):
    """The uncond half of the text embeddings is the negative prompt's encoding (not the empty
    prompt's), the cond half the prompt's. Kills: dropping the negative prompt."""
    import torch

    pipe = loaded.pipe
    with torch.no_grad():
        prompt_embeds, negative_embeds = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
        _, empty_embeds = pipe.encode_prompt(PROMPT, "cpu", 1, True, "")
    assert not torch.allclose(negative_embeds, empty_embeds)  # the check below can tell them apart
    calls, _ = run(loaded, tmp_path, unit(0), negative_prompt=NEGATIVE)
    for call in calls:
        torch.testing.assert_close(call["text"][:1], negative_embeds)
        torch.testing.assert_close(call["text"][1:], prompt_embeds)


# ---------------------------------------------------------------------------------- id_scale
@pytest.mark.parametrize("id_scale", [0.3, 1.7])
def test_the_runner_applies_id_scale_to_every_ip_adapter_processor(loaded, tmp_path, id_scale):
    """Whatever scale the pipeline was loaded with (build_pipeline's default, 0.8), each IP-Adapter
    attention processor scales by the run's id_scale during the run. Kills: ignoring id_scale."""
    calls, _ = run(loaded, tmp_path, unit(0), id_scale=id_scale)
    for call in calls:
        assert call["ip_scales"] and all(scales == [pytest.approx(id_scale)] for scales in call["ip_scales"])


def test_id_scale_zero_switches_the_identity_off_in_the_pixels(loaded, tmp_path):
    """At id_scale 0 the identity no longer changes a pixel; at 0.8 it does. Kills: ignoring id_scale."""
    _, first = run(loaded, tmp_path / "a", unit(0), id_scale=0.0)
    _, second = run(loaded, tmp_path / "b", unit(1), id_scale=0.0)
    assert np.array_equal(first, second)
    _, third = run(loaded, tmp_path / "c", unit(0), id_scale=0.8)
    _, fourth = run(loaded, tmp_path / "d", unit(1), id_scale=0.8)
    assert not np.array_equal(third, fourth)


# ---------------------------------------------------------------------------------- FaceID LoRA
def lora_layers(unet) -> list:
    from peft.tuners.lora import LoraLayer

    return [module for module in unet.modules() if isinstance(module, LoraLayer)]


def test_the_faceid_lora_is_active_at_full_weight(loaded, tiny_models):
    """Every layer the checkpoint's LoRA touches (4 projections of every attention) carries it,
    switched on, at weight 1 (peft scaling = lora_alpha / r). Kills: LoRA weight 0, LoRA disabled."""
    import torch

    state = torch.load(str(tiny_models["faceid"]), map_location="cpu", weights_only=True)  # h94's nested .bin
    lora_keys = [key for key in state["ip_adapter"] if "_lora.down." in key]
    layers = lora_layers(loaded.pipe.unet)
    assert len(layers) == len(lora_keys) > 0
    for layer in layers:
        assert ADAPTER in layer.active_adapters and not layer.disable_adapters
        assert layer.scaling[ADAPTER] == pytest.approx(layer.lora_alpha[ADAPTER] / layer.r[ADAPTER])


def test_the_faceid_lora_shapes_the_pixels(loaded):
    """The loaded pipeline at the default --lora-scale (1) draws what the LoRA at weight 1 draws, not what it
    draws at weight 0 (generate_images sets the weight on every call). Kills: LoRA weight 0, LoRA disabled,
    LoRA never loaded."""
    from dataclasses import replace

    config = GenerationConfig(PROMPT, seed=11, steps=STEPS)

    def draw(run_config: GenerationConfig) -> np.ndarray:
        images, _ = generate_images(loaded, run_config, unit(0), [11], 64, 64)
        return np.asarray(images[0])

    as_loaded = draw(config)
    at_zero = draw(replace(config, lora_scale=0.0))
    at_one = draw(replace(config, lora_scale=1.0))
    assert not np.array_equal(as_loaded, at_zero)
    assert np.array_equal(as_loaded, at_one)
    assert all(layer.scaling[ADAPTER] == pytest.approx(layer.lora_alpha[ADAPTER] / layer.r[ADAPTER])
               for layer in lora_layers(loaded.pipe.unet))
