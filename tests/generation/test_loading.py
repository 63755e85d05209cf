"""Loading IP-Adapter FaceID through diffusers: tiny random SD1.5/SDXL pipelines saved to disk and
loaded the way real checkpoints are; wrong or hostile weight files; missing weights; no network."""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest
from tiny_pipelines import STEPS, faceid_state_dict, save_tiny_faceid, save_tiny_pipeline, unit

from castkeep.errors import GenerationError, ModelNotFoundError
from castkeep.generation.config import GenerationConfig
from castkeep.generation.loading import build_pipeline, resolve_base_model, resolve_ip_adapter
from castkeep.generation.runner import generate_images

pytestmark = pytest.mark.generation


def test_faceid_loads_through_diffusers_with_its_lora(loaded, tiny_models):
    pipe = loaded.pipe
    assert loaded.kind == "sd15" and loaded.checkpoint.variant == "faceid" and loaded.checkpoint.has_lora
    # The FaceID LoRA really went in through peft, and the cross-attention processors are IP-Adapter ones.
    assert "faceid_0" in getattr(pipe.unet, "peft_config", {})
    ip_processors = [p for p in pipe.unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    assert len(ip_processors) == sum(name.endswith("attn2.processor") for name in pipe.unet.attn_processors)
    assert loaded.ip_adapter_hash == hashlib.sha256(tiny_models["faceid"].read_bytes()).hexdigest()
    assert loaded.native_size == 64


def test_pickled_bin_checkpoint_loads_with_weights_only(tiny_models, tmp_path):
    """Real FaceID checkpoints are .bin files: nested {image_proj, ip_adapter} dicts."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models["pipeline"] / "unet")
    flat = faceid_state_dict(unet, seed=3, lora=True)
    nested = {"image_proj": {k[len("image_proj."):]: v for k, v in flat.items() if k.startswith("image_proj.")},
              "ip_adapter": {k[len("ip_adapter."):]: v for k, v in flat.items() if k.startswith("ip_adapter.")}}
    torch.save(nested, tmp_path / "ip-adapter-faceid_sd15.bin")
    # A folder holding the default file name resolves to it.
    assert resolve_ip_adapter(str(tmp_path), "sd15") == tmp_path / "ip-adapter-faceid_sd15.bin"
    result = build_pipeline(str(tiny_models["pipeline"]), str(tmp_path), device="cpu", hash_base_model=False)
    assert result.checkpoint.has_lora and result.base_model_hash is None
    # The .bin's weights are the ones in the UNet's image projection now (whatever diffusers names them).
    projection = result.pipe.unet.encoder_hid_proj.state_dict().values()
    assert any(torch.equal(tensor, flat["image_proj.proj.0.weight"]) for tensor in projection)


class Payload:
    """An object whose unpickling would run code: weights_only must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_untrusted_pickle_is_refused(tiny_models, tmp_path):
    import torch

    bad = tmp_path / "evil.bin"
    torch.save({"image_proj": {"x": Payload()}, "ip_adapter": {}}, bad)
    with pytest.raises(ModelNotFoundError, match="unsafe unpickling|not a readable"):
        build_pipeline(str(tiny_models["pipeline"]), str(bad), device="cpu")


@pytest.mark.parametrize("problem", ["clip", "plus", "dims", "corrupt"])
def test_wrong_adapter_files_give_clear_errors(tiny_models, tmp_path, problem):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "adapter.safetensors"
    if problem == "corrupt":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
        expected, message = ModelNotFoundError, "not a readable safetensors"
    else:
        tensors = {"ip_adapter.1.to_k_ip.weight": torch.zeros(64, 32)}
        if problem == "clip":  # plain CLIP-image IP-Adapter
            tensors["image_proj.proj.weight"] = torch.zeros(128, 1024)
            message = "CLIP-image IP-Adapter"
        elif problem == "plus":  # FaceID Plus without its CLIP image encoder (offline, not cached)
            tensors["image_proj.perceiver_resampler.proj_in.weight"] = torch.zeros(8, 8)
            tensors["image_proj.perceiver_resampler.proj_out.weight"] = torch.zeros(32, 8)
            tensors["image_proj.proj.0.weight"] = torch.zeros(1024, 512)
            message = r"CLIP image encoder .* \(FaceID Plus needs it\)"
        else:  # FaceID for a UNet with another cross-attention width (SDXL-style vs SD1.5)
            tensors["image_proj.norm.weight"] = torch.zeros(48)
            tensors["image_proj.proj.0.weight"] = torch.zeros(1024, 512)
            message = "UNet but the base model"
        save_file(tensors, str(path))
        expected = ModelNotFoundError if problem == "plus" else GenerationError
    with pytest.raises(expected, match=message) as info:
        build_pipeline(str(tiny_models["pipeline"]), str(path), device="cpu")
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


def test_no_network_is_attempted_with_local_paths(tiny_models, monkeypatch):
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
    result = build_pipeline(str(tiny_models["pipeline"]), str(tiny_models["plain"]), device="auto")
    config = GenerationConfig("a face", seed=1, steps=STEPS)
    images, _ = generate_images(result, config, unit(0), [1], 64, 64)
    assert images[0].size == (64, 64)
    assert attempts == []


def test_sdxl_pipeline_with_faceid(tiny_models, tmp_path):
    folder = save_tiny_pipeline(tmp_path / "tiny-sdxl", sdxl=True)
    adapter = save_tiny_faceid(tmp_path / "faceid-sdxl.safetensors", folder)
    result = build_pipeline(str(folder), str(adapter), device="cpu")
    assert result.kind == "sdxl" and type(result.pipe).__name__ == "StableDiffusionXLPipeline"
    # diffusers would add its own dwtDct mark (invisible-watermark is installed); castkeep marks outputs itself.
    assert result.pipe.watermark is None
    config = GenerationConfig("a face", seed=5, steps=STEPS, aspect="16:9")
    first, _ = generate_images(result, config, unit(0), [5], 88, 48)
    again, _ = generate_images(result, config, unit(0), [5], 88, 48)
    other, _ = generate_images(result, config, unit(1), [5], 88, 48)
    assert first[0].size == (88, 48)
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))
    # An SD1.5 FaceID checkpoint on an SDXL base: named as such before diffusers fails on shapes.
    with pytest.raises(GenerationError, match="UNet but the base model"):
        build_pipeline(str(folder), str(tiny_models["faceid"]), device="cpu")
