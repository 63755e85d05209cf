"""IP-Adapter FaceID generation on a tiny random SD1.5-shaped pipeline saved to disk and loaded the way
real checkpoints are (from_pretrained(folder), load_ip_adapter(file)), scored with the real face
models, with real PNG/JSON outputs."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.errors import GenerationError, ModelNotFoundError
from castkeep.generation.config import GenerationConfig
from castkeep.generation.loading import build_pipeline, resolve_base_model, resolve_ip_adapter
from castkeep.generation.metadata import parse_a1111_parameters, read_png_text, schema_errors
from castkeep.generation.runner import GenerationRunner, Identity, generate_images
from castkeep.generation.scoring import IdentityScorer, OutputScore
from castkeep.generation.testing import faceid_state_dict, save_tiny_faceid, save_tiny_pipeline

STEPS = 2


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    pipeline = save_tiny_pipeline(root / "tiny-sd15")
    return {
        "pipeline": pipeline,
        "faceid": save_tiny_faceid(root / "adapters" / "ip-adapter-faceid_tiny.safetensors", pipeline, lora=True),
        "plain": save_tiny_faceid(root / "plain" / "faceid-nolora.safetensors", pipeline, lora=False),
    }


@pytest.fixture(scope="module")
def loaded(models):
    return build_pipeline(str(models["pipeline"]), str(models["faceid"]), device="cpu")


class PixelScorer:
    """Stands in for a face scorer on tiny-model noise (which has no face): the output's mean
    brightness, so ranking and retry decisions depend on the real generated pixels."""

    def score(self, image: Image.Image) -> OutputScore:
        value = float(np.asarray(image, dtype=np.float32).mean() / 255.0)
        return OutputScore(face_found=True, faces=1, cosine=value, probability=value, same=value > 0.5)


# ---------------------------------------------------------------------------------- loading
def test_faceid_loads_through_diffusers_with_its_lora(loaded, models):
    pipe = loaded.pipe
    assert loaded.kind == "sd15" and loaded.checkpoint.variant == "faceid" and loaded.checkpoint.has_lora
    # The FaceID LoRA really went in through peft, and the cross-attention processors are IP-Adapter ones.
    assert "faceid_0" in getattr(pipe.unet, "peft_config", {})
    ip_processors = [p for p in pipe.unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    assert len(ip_processors) == sum(name.endswith("attn2.processor") for name in pipe.unet.attn_processors)
    assert loaded.ip_adapter_hash == hashlib.sha256(models["faceid"].read_bytes()).hexdigest()
    assert loaded.native_size == 64


def test_pickled_bin_checkpoint_loads_with_weights_only(models, tmp_path):
    """Real FaceID checkpoints are .bin files: nested {image_proj, ip_adapter} dicts."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(models["pipeline"] / "unet")
    flat = faceid_state_dict(unet, seed=3, lora=True)
    nested = {"image_proj": {k[len("image_proj."):]: v for k, v in flat.items() if k.startswith("image_proj.")},
              "ip_adapter": {k[len("ip_adapter."):]: v for k, v in flat.items() if k.startswith("ip_adapter.")}}
    torch.save(nested, tmp_path / "ip-adapter-faceid_sd15.bin")
    # A folder holding the default file name resolves to it.
    assert resolve_ip_adapter(str(tmp_path), "sd15") == tmp_path / "ip-adapter-faceid_sd15.bin"
    result = build_pipeline(str(models["pipeline"]), str(tmp_path), device="cpu", hash_base_model=False)
    assert result.checkpoint.has_lora and result.base_model_hash is None


class Payload:
    """An object whose unpickling would run code: weights_only must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_untrusted_pickle_is_refused(models, tmp_path):
    import torch

    bad = tmp_path / "evil.bin"
    torch.save({"image_proj": {"x": Payload()}, "ip_adapter": {}}, bad)
    with pytest.raises(ModelNotFoundError, match="unsafe unpickling|not a readable"):
        build_pipeline(str(models["pipeline"]), str(bad), device="cpu")


@pytest.mark.parametrize("problem", ["clip", "plus", "dims", "corrupt"])
def test_wrong_adapter_files_give_clear_errors(models, tmp_path, problem):
    from safetensors.torch import save_file
    import torch

    path = tmp_path / "adapter.safetensors"
    if problem == "corrupt":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
        expected = ModelNotFoundError
    else:
        tensors = {"ip_adapter.1.to_k_ip.weight": torch.zeros(64, 32)}
        if problem == "clip":  # plain CLIP-image IP-Adapter
            tensors["image_proj.proj.weight"] = torch.zeros(128, 1024)
        elif problem == "plus":
            tensors["image_proj.perceiver_resampler.proj_in.weight"] = torch.zeros(8, 8)
            tensors["image_proj.perceiver_resampler.proj_out.weight"] = torch.zeros(32, 8)
            tensors["image_proj.proj.0.weight"] = torch.zeros(1024, 512)
        else:  # FaceID for a UNet with another cross-attention width (SDXL-style vs SD1.5)
            tensors["image_proj.norm.weight"] = torch.zeros(48)
            tensors["image_proj.proj.0.weight"] = torch.zeros(1024, 512)
        save_file(tensors, str(path))
        expected = GenerationError
    with pytest.raises(expected) as info:
        build_pipeline(str(models["pipeline"]), str(path), device="cpu")
    assert "\n" not in str(info.value)


def test_missing_weights_say_what_to_download(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_base_model(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        resolve_base_model(str(tmp_path / "empty"))
    # Hub ids with HF_HUB_OFFLINE (conftest) and nothing cached: instructions, not a hub traceback.
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download .* --base-model"):
        resolve_base_model("castkeep-test/not-a-cached-model")
    with pytest.raises(ModelNotFoundError, match="ip-adapter-faceid_sd15.bin.*--ip-adapter"):
        resolve_ip_adapter("castkeep-test/not-cached-faceid", "sd15")


def test_no_network_is_attempted_with_local_paths(models, monkeypatch):
    """Even with Hub access enabled, local paths load and generate without a single connection."""
    import huggingface_hub.constants

    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    result = build_pipeline(str(models["pipeline"]), str(models["plain"]), device="auto")
    config = GenerationConfig("a face", seed=1, steps=STEPS)
    images, _ = generate_images(result, config, unit(0), [1], 64, 64)
    assert images[0].size == (64, 64)
    assert attempts == []


# ---------------------------------------------------------------------------------- pixels
def pixels(loaded, vector, seed, width=64, height=64, **kwargs) -> np.ndarray:
    config = GenerationConfig("portrait photo of a person", negative_prompt="blurry", seed=seed, steps=STEPS,
                              **kwargs)
    loaded.pipe.set_ip_adapter_scale(config.id_scale)
    images, _ = generate_images(loaded, config, vector, [seed], width, height)
    return np.asarray(images[0])


def test_same_seed_same_pixels_other_identity_other_pixels(loaded):
    first = pixels(loaded, unit(0), seed=42)
    again = pixels(loaded, unit(0), seed=42)
    other_identity = pixels(loaded, unit(1), seed=42)
    other_seed = pixels(loaded, unit(0), seed=43)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_identity)
    assert not np.array_equal(first, other_seed)
    # id_scale 0 switches the identity off: then the vector no longer matters.
    assert np.array_equal(pixels(loaded, unit(0), 42, id_scale=0.0), pixels(loaded, unit(1), 42, id_scale=0.0))
    loaded.pipe.set_ip_adapter_scale(0.8)


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "4:3"])
def test_output_size_follows_aspect_ratio(loaded, tmp_path, aspect):
    config = GenerationConfig("a face", seed=7, steps=STEPS, aspect=aspect)
    result = GenerationRunner(loaded, PixelScorer()).run(config, Identity("Ada", unit(0)), tmp_path / "out")
    image = Image.open(result.out_dir / result.kept[0].file)
    w, h = (float(x) for x in aspect.split(":"))
    # Rounded to multiples of 8 around the model's native 64x64 pixel count.
    assert image.width % 8 == 0 and image.height % 8 == 0
    assert abs(image.width / image.height - w / h) <= 8 / min(image.size)
    assert abs(image.width * image.height - 64 * 64) <= 0.25 * 64 * 64
    assert (image.width, image.height) == (result.summary["width"], result.summary["height"])


# ---------------------------------------------------------------------------------- runs
def test_run_scores_every_output_and_writes_metadata(loaded, fast_analyzer, tmp_path):
    config = GenerationConfig("portrait, soft light", negative_prompt="blurry, lowres", seed=100, steps=STEPS,
                              num_images=2, scheduler="euler_a")
    scorer = IdentityScorer(fast_analyzer, unit(5), name="Ada")
    result = GenerationRunner(loaded, scorer, analyzer_fingerprint=fast_analyzer.fingerprint).run(
        config, Identity("Ada", unit(5), source="vector"), tmp_path / "run")
    assert [a.seed for a in result.kept] == [100, 101]
    for attempt in result.kept:
        png = result.out_dir / attempt.file
        sidecar = json.loads(png.with_suffix(".json").read_text())
        assert schema_errors(sidecar) == []
        # Tiny-model noise has no face: a recorded result, not a crash.
        assert sidecar["score"]["face_found"] is False and sidecar["score"]["cosine"] is None
        assert sidecar["seed"] == attempt.seed and sidecar["settings"]["sampler"] == "Euler a"
        text = read_png_text(png)
        params = parse_a1111_parameters(text["parameters"])
        assert params["prompt"] == config.prompt and params["negative_prompt"] == config.negative_prompt
        assert params["Seed"] == str(attempt.seed) and params["Steps"] == str(STEPS)
        assert params["Size"] == f"{png_size(png)[0]}x{png_size(png)[1]}"
        assert params["Identity cosine"] == "no face" and params["Sampler"] == "Euler a"
        assert json.loads(text["castkeep"]) == sidecar
    summary = json.loads(result.summary_path.read_text())
    assert summary["face_found"] == 0 and len(summary["consistency"]["matrix"]) == 2
    assert Image.open(result.contact_sheet_path).size[0] > 256
    # A run never overwrites another.
    with pytest.raises(GenerationError, match="already holds"):
        GenerationRunner(loaded, scorer).run(config, Identity("Ada", unit(5)), tmp_path / "run")


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_sidecar_validator_catches_damage(loaded, tmp_path):
    result = GenerationRunner(loaded, PixelScorer()).run(GenerationConfig("x", seed=1, steps=STEPS),
                                                          Identity("Ada", unit(0)), tmp_path / "v")
    sidecar = json.loads((result.out_dir / result.kept[0].file).with_suffix(".json").read_text())
    damaged = dict(sidecar, seed=-3, score={**sidecar["score"], "face_found": "yes"})
    del damaged["attempts"]
    errors = schema_errors(damaged)
    assert any("$.seed" in e for e in errors) and any("face_found" in e for e in errors)
    assert any("attempts" in e for e in errors)


def test_best_of_keeps_top_scores_and_records_every_attempt(loaded, tmp_path):
    config = GenerationConfig("a face", seed=10, steps=STEPS, num_images=2, best_of=5)
    result = GenerationRunner(loaded, PixelScorer()).run(config, Identity("Ada", unit(0)), tmp_path / "best",
                                                         keep_rejected=True)
    scores = {a.seed: a.score.cosine for a in result.attempts}
    assert sorted(scores) == list(range(10, 15))
    best_two = sorted(scores, key=scores.get, reverse=True)[:2]
    assert [a.seed for a in result.kept] == best_two
    sidecar = json.loads((result.out_dir / result.kept[0].file).with_suffix(".json").read_text())
    assert [a["seed"] for a in sidecar["attempts"]] == list(range(10, 15))
    assert sum(a["kept"] for a in sidecar["attempts"]) == 2
    assert {a["seed"]: a["cosine"] for a in sidecar["attempts"]} == {s: round(v, 4) for s, v in scores.items()}
    assert len(list((result.out_dir / "rejected").glob("*.png"))) == 3
    # Each kept seed regenerates its image exactly on its own.
    alone = GenerationRunner(loaded, PixelScorer()).run(
        GenerationConfig("a face", seed=best_two[0], steps=STEPS), Identity("Ada", unit(0)), tmp_path / "alone")
    assert np.array_equal(np.asarray(alone.kept[0].image), np.asarray(result.kept[0].image))


def test_min_score_retries_with_new_seeds_until_budget(loaded, tmp_path):
    runner = GenerationRunner(loaded, PixelScorer())
    impossible = GenerationConfig("a face", seed=20, steps=STEPS, min_score=1.0, max_tries=3)
    result = runner.run(impossible, Identity("Ada", unit(0)), tmp_path / "hard")
    assert [a.seed for a in result.attempts] == [20, 21, 22]
    assert not result.target_met and result.summary["target_met"] is False
    assert len(result.kept) == 1 and result.kept[0].score.cosine == max(a.score.cosine for a in result.attempts)
    # Pass mark set between the first attempt's score and the best of the three: retries stop at the
    # first seed that reaches it.
    values = [a.score.cosine for a in result.attempts]
    if max(values[1:]) > values[0]:
        target = next(i for i, v in enumerate(values) if v > values[0])
        reachable = GenerationConfig("a face", seed=20, steps=STEPS, min_score=(values[0] + values[target]) / 2,
                                     max_tries=3)
        retried = runner.run(reachable, Identity("Ada", unit(0)), tmp_path / "reach")
        assert retried.target_met and len(retried.attempts) == target + 1
    easy = runner.run(GenerationConfig("a face", seed=20, steps=STEPS, min_score=-1.0, max_tries=3),
                      Identity("Ada", unit(0)), tmp_path / "easy")
    assert len(easy.attempts) == 1 and easy.target_met


def test_batches_give_the_same_images_as_single_calls(loaded):
    config = GenerationConfig("a face", seed=30, steps=STEPS, batch_size=2)
    batch, _ = generate_images(loaded, config, unit(0), [30, 31], 64, 64)
    single, _ = generate_images(loaded, config, unit(0), [31], 64, 64)
    assert np.allclose(np.asarray(batch[1], dtype=np.int16), np.asarray(single[0], dtype=np.int16), atol=2)


def test_sdxl_pipeline_with_faceid(models, tmp_path):
    folder = save_tiny_pipeline(tmp_path / "tiny-sdxl", sdxl=True)
    adapter = save_tiny_faceid(tmp_path / "faceid-sdxl.safetensors", folder)
    result = build_pipeline(str(folder), str(adapter), device="cpu")
    assert result.kind == "sdxl" and type(result.pipe).__name__ == "StableDiffusionXLPipeline"
    config = GenerationConfig("a face", seed=5, steps=STEPS, aspect="16:9")
    first, _ = generate_images(result, config, unit(0), [5], 88, 48)
    again, _ = generate_images(result, config, unit(0), [5], 88, 48)
    other, _ = generate_images(result, config, unit(1), [5], 88, 48)
    assert first[0].size == (88, 48)
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))
    # An SD1.5 FaceID checkpoint on an SDXL base: named as such before diffusers fails on shapes.
    with pytest.raises(GenerationError, match="UNet but the base model"):
        build_pipeline(str(folder), str(models["faceid"]), device="cpu")
