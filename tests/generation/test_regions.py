"""Several characters in one shot: each identity conditions only its own region, through diffusers' IP-Adapter
masks as `generate_images` passes them (one adapter, one token set and one mask per identity).

Two levels. In the attention layers, which castkeep controls: an identity's contribution is exactly zero
outside its mask, at every IP-Adapter layer and step, for the guided and unguided halves of the batch, and
an identity's tokens are its own (changing one character's vector leaves the other's contribution as it
was). In the pixels, which the UNet and VAE shape afterwards: on the regional tiny pipeline
(tiny_pipelines.build_tiny_regional_pipeline says why it differs from the default one), changing only one
character's vector changes its own half of the image several times more than the other half.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image
from tiny_pipelines import REGIONAL_SIZE, STEPS, save_tiny_faceid, save_tiny_pipeline, unit

from castkeep.generation.config import GenerationConfig
from castkeep.generation.loading import LoadedPipeline, build_pipeline
from castkeep.generation.runner import generate_images
from castkeep.generation.storyboard.plan import NAMED_REGIONS, Region
from castkeep.generation.storyboard.shot import region_mask

pytestmark = [pytest.mark.generation, pytest.mark.slow]

PROMPT = "two people talking"


@pytest.fixture(scope="module")
def regional(tmp_path_factory) -> LoadedPipeline:
    root = tmp_path_factory.mktemp("tiny-regional")
    folder = save_tiny_pipeline(root / "sd15-regional", regional=True)
    return build_pipeline(str(folder), str(save_tiny_faceid(root / "faceid.safetensors", folder, lora=False)),
                          device="cpu")


def halves(width: int, height: int) -> list[Image.Image]:
    return [region_mask(Region(box=NAMED_REGIONS[side]), width, height) for side in ("left", "right")]


def record_contributions(loaded: LoadedPipeline) -> tuple[list[Any], int]:
    """Wrap every IP-Adapter attention processor of the UNet so that each call appends, per identity, its
    contribution to the layer's output: the output minus the output with that identity's tokens zeroed
    (zero keys and values add nothing to the attention). One tensor per call: identities × batch ×
    positions × channels. Also returns the number of IP-Adapter layers."""
    import torch

    calls: list[Any] = []

    class ContributionProbe(torch.nn.Module):
        def __init__(self, processor: Any) -> None:
            super().__init__()
            self.processor = processor

        # The named parameters matter: diffusers passes a processor only the keyword arguments it declares.
        def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None,  # type: ignore[override]
                     attention_mask: Any = None, temb: Any = None, scale: float = 1.0,
                     ip_adapter_masks: Any = None) -> Any:
            def run(states: Any) -> Any:
                return self.processor(attn, hidden_states, encoder_hidden_states=states,
                                      attention_mask=attention_mask, temb=temb, scale=scale,
                                      ip_adapter_masks=ip_adapter_masks)

            output = run(encoder_hidden_states)
            text, (tokens,) = encoder_hidden_states  # one adapter: batch × identities × tokens × dim
            contributions = []
            for identity in range(tokens.shape[1]):
                without = tokens.clone()
                without[:, identity] = 0
                contributions.append(output - run((text, [without])))
            calls.append(torch.stack(contributions))
            return output

    attention = [m for m in loaded.pipe.unet.modules() if hasattr(getattr(m, "processor", None), "to_k_ip")]
    for module in attention:
        module.processor = ContributionProbe(module.processor)
    return calls, len(attention)


@pytest.mark.parametrize("width, height", [(64, 64), (96, 64)])
def test_each_identity_attends_only_inside_its_mask(tiny_models, width, height):
    """Kills: masks swapped, transposed or dropped, identities averaged into one token set, masks not
    following the batch (two seeds, guided and unguided halves)."""
    loaded = build_pipeline(str(tiny_models["pipeline"]), str(tiny_models["plain"]), device="cpu")
    calls, ip_layers = record_contributions(loaded)
    config = GenerationConfig(PROMPT, seed=3, steps=STEPS, id_scale=1.0)

    def contributions(left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
        calls.clear()
        generate_images(loaded, config, np.stack([left, right]), [3, 4], width, height, masks=halves(width, height))
        return [call.numpy() for call in calls]

    first = contributions(unit(0), unit(1))
    assert len(first) == STEPS * ip_layers
    for call in first:
        identities, batch, positions, _ = call.shape
        assert (identities, batch) == (2, 4)  # 2 seeds × (unguided, guided)
        rows = int(round((positions * height / width) ** 0.5))
        size = np.abs(call).mean(axis=-1).reshape(identities, batch, rows, positions // rows)
        middle = size.shape[-1] // 2
        for own, other in ((size[0, ..., :middle], size[0, ..., middle:]), (size[1, ..., middle:], size[1, ..., :middle])):
            assert np.all(other == 0.0)
            assert np.all(own > 0.0)
    # Same inputs at the first layer: changing the left vector changes the left identity's contribution only.
    changed = contributions(unit(2), unit(1))
    assert np.array_equal(changed[0][1], first[0][1])
    assert not np.allclose(changed[0][0], first[0][0])


def pixel_change_ratios(loaded: LoadedPipeline, size: int) -> tuple[float, float]:
    """(how much more the left half changes than the right when only the left vector changes, the same for
    the right): mean absolute pixel change over each half."""
    config = GenerationConfig(PROMPT, seed=3, steps=STEPS, id_scale=1.0)

    def draw(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        images, _ = generate_images(loaded, config, np.stack([left, right]), [3], size, size, masks=halves(size, size))
        return np.asarray(images[0], dtype=np.float32)

    base = draw(unit(0), unit(1))
    left = np.abs(draw(unit(2), unit(1)) - base).mean(axis=(0, 2))
    right = np.abs(draw(unit(0), unit(3)) - base).mean(axis=(0, 2))
    middle = size // 2
    return (float(left[:middle].mean() / left[middle:].mean()),
            float(right[middle:].mean() / right[:middle].mean()))


def test_changing_one_character_changes_its_own_half_several_times_more(regional):
    left, right = pixel_change_ratios(regional, REGIONAL_SIZE)
    assert left >= 3.0 and right >= 3.0, (left, right)


def test_a_character_with_an_empty_mask_has_no_effect(regional):
    size = REGIONAL_SIZE
    config = GenerationConfig(PROMPT, seed=3, steps=STEPS, id_scale=1.0)
    only_left = [Image.new("L", (size, size), 255), Image.new("L", (size, size), 0)]

    def draw(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        images, _ = generate_images(regional, config, np.stack([left, right]), [3], size, size, masks=only_left)
        return np.asarray(images[0], dtype=np.float32)

    assert np.array_equal(draw(unit(0), unit(1)), draw(unit(0), unit(3)))
    assert not np.array_equal(draw(unit(0), unit(1)), draw(unit(2), unit(1)))
