"""FaceID Plus / Plus v2 and Portrait adapters: variants told apart from the checkpoint, the CLIP image encoder on
the character's STORED face crops, Plus v2's shortcut and s_scale, Portrait's per-reference tokens in the adapter's
space. Tiny random pipelines, adapters and CLIP encoder on disk (loaded like real weights); a real store
registered through the CLI from real photos; real diffusers projection layers, observed with forward hooks."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_pipelines import (
    CLIP_IMAGE_SIZE,
    PixelScorer,
    save_tiny_clip_encoder,
    save_tiny_faceid_plus,
    save_tiny_pipeline,
    save_tiny_portrait,
    unit,
)

from castkeep.errors import GenerationError
from castkeep.generation.metadata import sidecar_errors, summary_errors
from castkeep.identity.store import Store

pytestmark = pytest.mark.generation
PERSON, OTHER = "Abdullah_Gul", "Adrien_Brody"


@pytest.fixture(scope="module")
def plus_models(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plus-models")
    sd15 = tiny_models["pipeline"]
    v2 = save_tiny_faceid_plus(root / "h94" / "ip-adapter-faceid-plusv2_sd15.bin", sd15)
    v1 = root / "h94" / "ip-adapter-faceid-plus_sd15.bin"
    shutil.copyfile(v2, v1)  # Plus v1 and v2 share one layout: only the file name (or --plus-version) differs
    sdxl = save_tiny_pipeline(root / "tiny-sdxl", sdxl=True)
    return {"encoder": save_tiny_clip_encoder(root / "clip-encoder"), "v2": v2, "v1": v1, "sdxl": sdxl,
            "v2_sdxl": save_tiny_faceid_plus(root / "h94" / "ip-adapter-faceid-plusv2_sdxl.bin", sdxl),
            "portrait": save_tiny_portrait(root / "h94" / "ip-adapter-faceid-portrait_sd15.bin", sd15),
            "portrait_unnamed": save_tiny_portrait(root / "other" / "my-faceid.safetensors", sd15)}


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, faces_dir, pack_dir, buffalo_l_pack) -> Path:
    """PERSON registered through the CLI from 6 real photos (more than the 5 references Plus/Portrait use),
    then given buffalo_l's space (the stand-in pack: see tests/conftest.py); OTHER from 2, without it."""
    from click.testing import CliRunner

    from castkeep.cli.main import main

    def invoke_cli(*args: str):
        with CliRunner().isolation() as (_, stderr, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            return code, stderr.getvalue().decode()

    folder = tmp_path_factory.mktemp("plus-store")
    photos = sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[:6]
    for args in (("register", PERSON, *map(str, photos)),
                 ("register", OTHER, *map(str, sorted((faces_dir / "lfw_gallery" / OTHER).glob("*.jpg"))[:2])),
                 ("reembed", PERSON, "--models", str(buffalo_l_pack))):
        models = ("--models", str(pack_dir)) if args[0] == "register" else ()
        code, stderr = invoke_cli(*args, "--store", str(folder), *models)
        assert code == 0, stderr
    return folder


class Recorder:
    """Wraps a diffusers class's real forward and keeps what it saw (nothing is replaced)."""

    def __init__(self, monkeypatch, cls, keep) -> None:
        self.calls: list = []
        forward = cls.forward

        def recording(module, *args, **kwargs):
            out = forward(module, *args, **kwargs)
            self.calls.append(keep(module, args, out))
            return out

        monkeypatch.setattr(cls, "forward", recording)


def _generate(invoke, pipeline, adapter, store, out, *extra, env=None):
    return invoke("generate", PERSON, "portrait", "--base-model", str(pipeline), "--ip-adapter", str(adapter),
                  "--store", str(store), "--out", str(out), "--steps", "2", "--seed", "3", "--device", "cpu",
                  "--json", *extra, env=env)


def _stored_references(store: Path, fingerprint: str | None = None, *, crops: bool = False):
    with Store.open(store, create=False) as opened:
        character = opened.get(PERSON, crops=crops)
    usable = [r for r in character.references if not r.flagged and (not crops or r.crop is not None)
              and (fingerprint is None or fingerprint in r.embeddings)]
    return sorted(usable, key=lambda r: -r.quality)[:5], character


def _clip_hidden(encoder_folder: Path, images: list[np.ndarray]):
    """The tiny encoder's penultimate hidden states of `images`, computed here independently of castkeep."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection.from_pretrained(encoder_folder)
    pixels = CLIPImageProcessor(size=CLIP_IMAGE_SIZE, crop_size=CLIP_IMAGE_SIZE)(
        images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        return (encoder(pixels, output_hidden_states=True).hidden_states[-2],
                encoder(torch.zeros_like(pixels[:1]), output_hidden_states=True).hidden_states[-2])


# ---------------------------------------------------------------------------------- telling variants apart
def test_variants_are_told_apart_from_keys_shapes_and_file_names(tiny_models, plus_models):
    from castkeep.errors import ConfigError
    from castkeep.generation.loading import inspect_faceid

    v2 = inspect_faceid(plus_models["v2"])
    assert (v2.variant, v2.shortcut, v2.needs_image_encoder, v2.clip_dim, v2.num_tokens) == (
        "faceid-plusv2", True, True, 48, 4)
    assert inspect_faceid(plus_models["v1"]).variant == "faceid-plus" and not inspect_faceid(plus_models["v1"]).shortcut
    assert inspect_faceid(plus_models["v2"], "v1").variant == "faceid-plus"  # the override wins over the name
    assert inspect_faceid(plus_models["v1"], "v2").variant == "faceid-plusv2"
    for portrait in (plus_models["portrait"], plus_models["portrait_unnamed"]):  # by name; by 16 tokens, no LoRA
        found = inspect_faceid(portrait)
        assert (found.variant, found.num_tokens, found.has_lora, found.needs_image_encoder) == (
            "faceid-portrait", 16, False, False)
    assert inspect_faceid(tiny_models["faceid"]).variant == "faceid"
    with pytest.raises(ConfigError, match="--plus-version"):
        inspect_faceid(tiny_models["faceid"], "v2")


def test_the_stored_crop_is_insightfaces_norm_crop_at_224(faces_dir, fast_analyzer):
    """IP-Adapter's reference code gives CLIP `face_align.norm_crop(photo, landmark=kps, image_size=224)`: the
    stored crop's aligned(224) is that crop (bit-identical on 12 LFW photos with the pinned OpenCV; with the floor
    versions' OpenCV a few dozen pixels differ by 2-3 grey levels, mean 0.002-0.005: rounding, which the max
    allows. Keypoints moved by half a pixel give max 43, mean 2.6)."""
    from insightface.utils import face_align

    from castkeep.identity.crops import FaceCrop
    from castkeep.landmarks.images import load_image

    photo = load_image(sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[0])
    kps = fast_analyzer.analyze(photo).single_face().kps
    reference = face_align.norm_crop(photo, landmark=np.asarray(kps), image_size=224).astype(np.int16)
    ours = FaceCrop.from_photo(photo, kps).aligned(224).astype(np.int16)
    assert ours.shape == reference.shape == (224, 224, 3)
    assert np.abs(ours - reference).max() <= 4 and np.abs(ours - reference).mean() < 0.05


# ---------------------------------------------------------------------------------- Plus v2 end to end
def test_plus_v2_end_to_end_gets_clip_features_of_the_stored_crops(invoke, tiny_models, plus_models, cli_store,
                                                                  tmp_path, monkeypatch):
    import torch
    from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection

    from castkeep.generation.model_hash import cached_sha256

    seen = Recorder(monkeypatch, IPAdapterFaceIDPlusImageProjection,
                    lambda m, args, out: (m.clip_embeds.clone(), m.shortcut, m.shortcut_scale, args[0].clone()))
    out = tmp_path / "out"
    result = _generate(invoke, tiny_models["pipeline"], plus_models["v2"], cli_store, out, "--image-encoder",
                       str(plus_models["encoder"]), "--s-scale", "0.7", "--batch-size", "2", "-n", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary_errors(json.loads((out / "summary.json").read_text())) == []

    references, _ = _stored_references(cli_store, crops=True)
    crops = [r.crop.aligned(224) for r in references]
    assert len(crops) == 5  # 6 registered: the 5 best
    hidden, empty = _clip_hidden(plus_models["encoder"], crops)
    clip, shortcut, shortcut_scale, id_embeds = seen.calls[0]
    # One call of 2 images under guidance: 2 negatives (the encoder on zeros), then 2 positives (the mean
    # over the stored crops' features), one "image" each.
    assert clip.shape == (4, 1, 17, 48) and id_embeds.shape == (4, 512)
    assert torch.allclose(clip[2:, 0], hidden.mean(0).expand(2, -1, -1), atol=1e-5)
    assert torch.allclose(clip[:2, 0], empty.expand(2, -1, -1), atol=1e-5)
    # Another crop gives other features: they come from these pixels.
    assert not torch.allclose(clip[2, 0], hidden[0], atol=1e-3)
    assert shortcut is True and shortcut_scale == 0.7

    inputs = summary["models"]["adapter_inputs"]
    assert inputs["variant"] == summary["models"]["ip_adapter_variant"] == "faceid-plusv2"
    assert inputs["shortcut"] is True and inputs["s_scale"] == 0.7 and summary["settings"]["s_scale"] == 0.7
    assert inputs["references"] == inputs["clip_references"] == 5 and inputs["identity_tokens"] == 4
    assert inputs["clip_crops_sha256"] == [hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest()[:16]
                                           for c in crops]
    assert summary["models"]["image_encoder"] == str(plus_models["encoder"])
    assert summary["models"]["image_encoder_hash"] == cached_sha256(plus_models["encoder"] / "model.safetensors")
    # The ID vector is still the character's buffalo_l one (what h94's adapters were trained on).
    assert summary["models"]["conditioning"]["fingerprint"].startswith("buffalo_l:")
    for output in summary["outputs"]:
        assert sidecar_errors(json.loads((out / output["sidecar"]).read_text())) == []


def test_plus_v2_on_sdxl(invoke, plus_models, cli_store, tmp_path, monkeypatch):
    from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection

    seen = Recorder(monkeypatch, IPAdapterFaceIDPlusImageProjection, lambda m, args, out: tuple(out.shape))
    result = _generate(invoke, plus_models["sdxl"], plus_models["v2_sdxl"], cli_store, tmp_path / "x",
                       "--image-encoder", str(plus_models["encoder"]), "--guidance", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["models"]["adapter_inputs"]["variant"] == "faceid-plusv2"
    assert seen.calls[0] == (1, 4, 64)  # no guidance: one row, 4 tokens of SDXL-tiny's 64-d cross-attention


def test_shortcut_is_on_for_v2_only_and_s_scale_moves_v2_pixels_only(tiny_models, plus_models, cli_store):
    from castkeep.generation.conditioning import known_space
    from castkeep.generation.config import GenerationConfig
    from castkeep.generation.identity_embeds import identity_embeds
    from castkeep.generation.loading import build_pipeline
    from castkeep.generation.runner import GenerationRunner, generate_images, identity_from_store

    pixels = {}
    for version in ("v2", "v1"):
        loaded = build_pipeline(str(tiny_models["pipeline"]), str(plus_models[version]), device="cpu",
                                image_encoder=str(plus_models["encoder"]))
        assert loaded.checkpoint.shortcut is (version == "v2")
        with Store.open(cli_store, create=False) as store:
            identity = identity_from_store(store, PERSON, known_space(plus_models[version]), "x",
                                           loaded.checkpoint.variant)
        for s_scale in (1.0, 0.2):
            config = GenerationConfig(prompt="portrait", steps=2, seed=5, s_scale=s_scale)
            prepared = GenerationRunner(loaded, PixelScorer()).adapter_conditioning(config, identity)
            image = generate_images(loaded, config, prepared.vector, [5], 64, 64, clip=prepared.clip)[0][0]
            pixels[version, s_scale] = np.asarray(image, dtype=np.int16)
        # Without CLIP features (a caller that does not supply them) the projection stops with one line.
        embeds = identity_embeds(unit(1), guidance=False)
        with pytest.raises(GenerationError, match="needs CLIP features of the character's face crops, and none were set"):
            loaded.pipe(prompt="x", num_inference_steps=1, guidance_scale=1.0, height=64, width=64,
                        ip_adapter_image_embeds=embeds)
        # Regions of several characters: refused in one line rather than mixing one face's crops into both.
        with pytest.raises(GenerationError, match="several characters"):
            generate_images(loaded, config, np.stack([unit(1), unit(2)]), [5], 64, 64, masks=[], clip=prepared.clip)
    assert np.abs(pixels["v2", 1.0] - pixels["v2", 0.2]).mean() > 0.5
    assert np.array_equal(pixels["v1", 1.0], pixels["v1", 0.2])


# ---------------------------------------------------------------------------------- Portrait
def test_portrait_gets_one_token_group_per_reference_in_the_adapters_space(invoke, tiny_models, plus_models,
                                                                          cli_store, tmp_path, monkeypatch):
    import torch
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    seen = Recorder(monkeypatch, MultiIPAdapterImageProjection,
                    lambda m, args, out: (args[0][0].clone(), tuple(out[0].shape)))
    result = _generate(invoke, tiny_models["pipeline"], plus_models["portrait"], cli_store, tmp_path / "p")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    fingerprint = summary["models"]["conditioning"]["fingerprint"]
    assert fingerprint.startswith("buffalo_l:")
    references, character = _stored_references(cli_store, fingerprint)
    expected = np.stack([r.embeddings[fingerprint] / np.linalg.norm(r.embeddings[fingerprint]) for r in references])
    embeds, projected = seen.calls[0]
    assert embeds.shape == (2, 5, 512) and projected == (2, 5, 16, 32)  # 5 references x 16 tokens each
    assert torch.count_nonzero(embeds[0]) == 0  # negatives: zero vectors
    assert np.allclose(embeds[1].numpy(), expected, atol=1e-6)
    # Not the store's primary (buffalo_s) space, nor one mean vector.
    primary = np.stack([r.embeddings[character.fingerprint] for r in references])
    assert not np.allclose(embeds[1].numpy(), primary / np.linalg.norm(primary, axis=1, keepdims=True), atol=0.1)
    inputs = summary["models"]["adapter_inputs"]
    assert (inputs["variant"], inputs["identity_tokens"], inputs["identity_vectors"], inputs["references"]) == (
        "faceid-portrait", 80, 5, 5)
    assert inputs["shortcut"] is None and summary["models"]["image_encoder"] is None


# ---------------------------------------------------------------------------------- errors
def test_a_missing_image_encoder_is_one_line_with_the_download(invoke, tiny_models, plus_models, cli_store,
                                                               tmp_path):
    offline = {"HF_HUB_OFFLINE": "1"}
    for extra, expected in ((("--image-encoder", "castkeep-test/not-cached"),
                             "huggingface-cli download castkeep-test/not-cached"),
                            ((), "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),  # the default, not cached here
                            (("--image-encoder", str(tmp_path / "no-such-folder")), "not found")):
        result = _generate(invoke, tiny_models["pipeline"], plus_models["v2"], cli_store, tmp_path / "o", *extra,
                           env=offline)
        assert result.returncode == 6, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("error:") and expected in line and "--image-encoder" in line
    plain = _generate(invoke, tiny_models["pipeline"], tiny_models["faceid"], cli_store, tmp_path / "o",
                      "--image-encoder", str(plus_models["encoder"]))
    assert plain.returncode == 14 and "takes no CLIP image" in plain.stderr
    assert not (tmp_path / "o").exists()


def test_the_reference_rule_skips_flagged_and_crop_less_references_and_keeps_the_best_five(cli_store):
    from castkeep.generation.plus_conditioning import MAX_REFERENCES, chosen_references

    with Store.open(cli_store, create=False) as store:
        character = store.get(PERSON, crops=True)
    by_quality = sorted(character.references, key=lambda r: -r.quality)
    assert len(by_quality) == 6 and MAX_REFERENCES == 5
    assert chosen_references(character, crops=True) == by_quality[:5]
    by_quality[0].flagged = True  # a flagged reference (an impostor kept with --force) never conditions
    by_quality[1].crop = None  # a reference stored before crops were kept: Portrait can use it, Plus cannot
    assert chosen_references(character, crops=True) == by_quality[2:]
    assert chosen_references(character, fingerprint=character.fingerprint) == by_quality[1:]
    assert chosen_references(character, fingerprint="buffalo_x:none.onnx:0") == []
