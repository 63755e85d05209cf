"""`--aspect` presets per model family: SD1.5 keeps its short side at 512, SDXL takes its training buckets
(no models needed, except the last test's tiny SDXL pipeline)."""

from __future__ import annotations

import pytest

from castkeep.errors import SizeError
from castkeep.generation.aspect import SDXL_BUCKETS, check_size, preset_size, resolve_size, sdxl_bucket


@pytest.mark.parametrize("aspect, size", [
    ("1:1", (512, 512)), ("2:3", (512, 768)), ("3:2", (768, 512)), ("4:3", (680, 512)), ("16:9", (912, 512)),
    ("9:16", (512, 912)), ("21:9", (1192, 512)), ("4:1", (2048, 512)),
    ("5:1", (2048, 408)),  # the long side would pass 4x native: shrunk to fit
])
def test_sd15_presets_keep_the_short_side_at_512(aspect, size):
    assert resolve_size(width=None, height=None, aspect=aspect, base=512, kind="sd15") == size
    check_size(*size, 512)  # every preset is within SD1.5's bounds


@pytest.mark.parametrize("aspect, size", [
    ("1:1", (1024, 1024)), ("16:9", (1344, 768)), ("9:16", (768, 1344)), ("3:2", (1216, 832)),
    ("2:3", (832, 1216)), ("4:3", (1152, 896)), ("21:9", (1536, 640)), ("4:1", (2048, 512)),
])
def test_sdxl_presets_are_its_training_buckets(aspect, size):
    assert resolve_size(width=None, height=None, aspect=aspect, base=1024, kind="sdxl") == size
    assert sorted(size, reverse=True) in [sorted(b, reverse=True) for b in SDXL_BUCKETS]


def test_sdxl_buckets_are_64_px_steps_near_1024_squared():
    for width, height in SDXL_BUCKETS:
        assert width % 64 == 0 and height % 64 == 0
        assert 0.85 < width * height / 1024**2 < 1.1
    assert sdxl_bucket(10.0) is None  # no bucket near 10:1: the area rule in 64-px steps instead
    assert preset_size("10:1", 1024, "sdxl") == (3264, 320)


def test_kind_defaults_from_the_native_side_and_explicit_sizes_still_win():
    assert preset_size("16:9", 1024) == (1344, 768) and preset_size("16:9", 512) == (912, 512)
    assert resolve_size(width=768, height=512, aspect=None, base=512, kind="sd15") == (768, 512)
    assert resolve_size(width=1024, height=None, aspect="16:9", base=1024, kind="sdxl") == (1024, 576)
    assert resolve_size(width=None, height=None, aspect=None, base=1024, kind="sdxl") == (1024, 1024)
    with pytest.raises(SizeError, match="at most 2048 px"):
        resolve_size(width=2056, height=512, aspect=None, base=512, kind="sd15")


@pytest.mark.generation
def test_a_tiny_sdxl_run_uses_the_scaled_bucket(tmp_path):
    """The runner passes the loaded model's kind: a 64-px SDXL-shaped model gets 1344x768 scaled by 64/1024."""
    from tiny_pipelines import STEPS, PixelScorer, save_tiny_faceid, save_tiny_pipeline, unit

    from castkeep.generation.config import GenerationConfig
    from castkeep.generation.loading import build_pipeline
    from castkeep.generation.runner import GenerationRunner, Identity

    folder = save_tiny_pipeline(tmp_path / "tiny-sdxl", sdxl=True)
    adapter = save_tiny_faceid(tmp_path / "ip-adapter-faceid_sdxl.safetensors", folder, lora=False)
    loaded = build_pipeline(str(folder), str(adapter), device="cpu", hash_base_model=False)
    config = GenerationConfig("a face", seed=1, steps=STEPS, aspect="16:9")
    result = GenerationRunner(loaded, PixelScorer()).run(config, Identity("Ada", unit(0)), tmp_path / "out")
    assert (result.summary["width"], result.summary["height"]) == preset_size("16:9", 64, "sdxl") == (80, 48)
