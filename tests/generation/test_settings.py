"""Generation settings and aspect-ratio sizing (no models needed)."""

from __future__ import annotations

import pytest

from castkeep.errors import CastkeepError, ConfigError, SizeError
from castkeep.generation.aspect import parse_aspect, resolve_size, size_for_aspect
from castkeep.generation.config import GenerationConfig


@pytest.mark.parametrize("aspect", ["1:1", "4:3", "3:4", "3:2", "16:9", "9:16", "21:9"])
@pytest.mark.parametrize("base", [512, 1024])
def test_aspect_sizes_keep_ratio_and_pixel_count(aspect, base):
    width, height = size_for_aspect(aspect, base)
    w, h = (float(x) for x in aspect.split(":"))
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - w / h) <= 8 / min(width, height)
    assert abs(width * height / base**2 - 1) < 0.05
    assert (width > height) == (w > h) and (width == height) == (w == h)


def test_explicit_sizes_and_bad_sizes():
    assert resolve_size(width=768, height=512, aspect=None, base=512) == (768, 512)
    assert resolve_size(width=1024, height=None, aspect="16:9", base=1024) == (1024, 576)
    assert resolve_size(width=None, height=None, aspect=None, base=1024) == (1024, 1024)
    assert parse_aspect("16x9") == parse_aspect("16/9") == pytest.approx(16 / 9)
    for bad in ("0:1", "abc", "1:0", "100:1", "-4:3"):
        with pytest.raises(CastkeepError, match="aspect"):
            parse_aspect(bad)
    with pytest.raises(CastkeepError, match="multiple of 8"):
        resolve_size(width=500, height=None, aspect=None, base=512)
    with pytest.raises(CastkeepError, match="not all three"):
        resolve_size(width=512, height=512, aspect="1:1", base=512)


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": " "}, "prompt is empty"),
    ({"steps": 0}, "--steps"),
    ({"num_images": 3, "best_of": 2, "min_score": 0.3, "max_tries": 2}, "--max-tries"),
    ({"min_score": 1.5}, "--min-score"),
    ({"scheduler": "karras-magic"}, "--scheduler"),
    ({"aspect": "wide"}, "aspect"),
])
def test_config_rejects_bad_settings_before_any_model_loads(kwargs, message):
    with pytest.raises(CastkeepError, match=message):
        GenerationConfig(**{"prompt": "a face", **kwargs})


@pytest.mark.parametrize("kwargs, message", [({"device": "tpu"}, "--device"), ({"dtype": "int8"}, "--dtype")])
def test_bad_device_or_dtype_fails_before_any_weights_are_looked_for(kwargs, message):
    from castkeep.generation.loading import build_pipeline

    # The base model does not exist: reaching it would be a ModelNotFoundError instead.
    with pytest.raises(ConfigError, match=message):
        build_pipeline("/nonexistent/castkeep-base", "/nonexistent/faceid.bin", **kwargs)


def test_load_options_are_not_run_settings():
    # device/dtype are given once, when the pipeline loads; a run config refuses them.
    with pytest.raises(TypeError):
        GenerationConfig("a face", device="cpu")  # type: ignore[call-arg]


def test_seeds_budget_and_candidates():
    config = GenerationConfig("a face", num_images=2, best_of=5, min_score=0.4)
    assert 0 <= config.seed < 2**32  # random base seed, recorded
    assert config.candidates == 5 and config.budget == 8
    seeded = GenerationConfig("a face", seed=41, best_of=3)
    assert [seeded.seed_for(i) for i in range(3)] == [41, 42, 43]
    assert GenerationConfig("a face", num_images=3).budget == 3
    assert GenerationConfig("a face", seed=2**32 - 1).seed_for(1) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 800_000, "height": 8}, "--width 800000 is too large: at most 4096 px"),
    ({"width": 8192, "height": 8192}, "--width 8192 is too large"),
    ({"height": 4104, "aspect": "1:2"}, "--height 4104 is too large"),
    ({"width": 4096, "aspect": "1:1"}, "4096x4096 is too large: at most 4.2 MP"),
])
def test_sizes_past_any_model_are_refused_before_loading(kwargs, message):
    """Issue 13 item 7: a size no model can take (4x SDXL's native side or pixels) is a SizeError at once."""
    with pytest.raises(SizeError, match=message):
        GenerationConfig("a face", **kwargs)


def test_size_bounds_follow_the_model():
    assert resolve_size(width=2048, height=512, aspect=None, base=512) == (2048, 512)
    assert resolve_size(width=1024, height=1024, aspect=None, base=512) == (1024, 1024)
    assert resolve_size(width=2048, height=2048, aspect=None, base=1024) == (2048, 2048)
    # No SDXL bucket is 10:1: about 1024² pixels in 64-pixel steps.
    assert resolve_size(width=None, height=None, aspect="10:1", base=1024) == (3264, 320)
    with pytest.raises(SizeError, match="at most 2048 px, 4x the native 512 px"):
        resolve_size(width=2056, height=64, aspect=None, base=512)
    with pytest.raises(SizeError, match="1032x1024 is too large"):
        resolve_size(width=1032, height=1024, aspect=None, base=512)
