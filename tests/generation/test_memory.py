"""Memory options: --offload (refused on the CPU, where the weights are in RAM already) and VAE
tiling/slicing switched per run, checked on the tiny pipeline's own VAE during a real run."""

from __future__ import annotations

import pytest
from tiny_pipelines import STEPS, unit

from castkeep.errors import ConfigError
from castkeep.generation.config import GenerationConfig
from castkeep.generation.loading import build_pipeline
from castkeep.generation.memory import check_offload, tiling_wanted
from castkeep.generation.runner import generate_images

pytestmark = pytest.mark.generation


def test_offload_is_refused_on_the_cpu_before_any_weights_load(tiny_models):
    with pytest.raises(ConfigError, match="--offload 'turbo' is not one of"):
        build_pipeline("/nonexistent/base", "/nonexistent/faceid.bin", offload="turbo")
    with pytest.raises(ConfigError, match="--offload model moves weights .* drop --offload"):
        build_pipeline(str(tiny_models["pipeline"]), str(tiny_models["plain"]), device="cpu", offload="model")
    check_offload("sequential", "cuda")  # fine on a GPU
    check_offload("none", "cpu")


def test_tiling_is_auto_on_for_large_images_and_under_sequential_offload():
    assert not tiling_wanted(None, 1024, 1024, 1024)
    assert tiling_wanted(None, 2048, 1536, 1024)  # 3 MP on SDXL
    assert tiling_wanted(None, 1024, 1024, 1024, "sequential")
    assert not tiling_wanted(False, 4096, 1024, 1024) and tiling_wanted(True, 512, 512, 512)


def vae_flags_during(loaded, config, seeds, width, height) -> list[tuple[bool, bool]]:
    vae = loaded.pipe.vae
    seen: list[tuple[bool, bool]] = []
    original = vae.decode

    def decode(*args, **kwargs):
        seen.append((bool(vae.use_tiling), bool(vae.use_slicing)))
        return original(*args, **kwargs)

    vae.decode = decode  # the pipeline calls self.vae.decode once per call; the flags are read there
    try:
        generate_images(loaded, config, unit(0), seeds, width, height)
    finally:
        del vae.decode  # the class's own method again
    return seen


def test_the_run_switches_vae_tiling_and_slicing(loaded):
    """Kills: ignoring --vae-tiling/--vae-slicing, or the auto rules."""
    base = dict(seed=1, steps=STEPS)
    assert vae_flags_during(loaded, GenerationConfig("a face", **base), [1], 64, 64) == [(False, False)]
    assert vae_flags_during(loaded, GenerationConfig("a face", vae_tiling=True, vae_slicing=True, **base),
                            [1], 64, 64) == [(True, True)]
    # Auto: 96x96 is 2.25x the tiny model's native 64x64 pixels; two images in one call are sliced.
    assert vae_flags_during(loaded, GenerationConfig("a face", batch_size=2, **base), [1, 2], 96, 96) == [(True, True)]
    assert vae_flags_during(loaded, GenerationConfig("a face", **base), [1], 64, 64) == [(False, False)]
