"""FaceID Plus v2 and Portrait adapters in `castkeep storyboard` and the edit commands (issue 9 follow-up): the
UNet's projection gets the CLIP features of the character's STORED face crops (Plus, encoded once per storyboard
and reused across shots, s_scale per shot), or one token group per reference vector (Portrait, not the mean
vector); summary.json repeats each shot's kept take's adapter inputs; a shot of several characters is refused
before any weights load; fix-face conditions the repaint the same way (Plus v2 and Portrait) and its sidecar
(valid against the edit schema) records the adapter inputs. Tiny random pipelines,
adapters and CLIP encoder on disk; a real store registered through the CLI from real photos; real diffusers
layers observed with forward hooks (test_faceid_plus.py's fixtures and Recorder)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_faceid_plus import OTHER, PERSON, Recorder, _clip_hidden, _stored_references, cli_store, plus_models

from castkeep.generation.metadata import edit_sidecar_errors, storyboard_summary_errors

pytestmark = pytest.mark.generation
__all__ = ["cli_store", "plus_models"]  # fixtures, used by name


def _plan(folder: Path, shots: str) -> Path:
    plan = folder / "plan.toml"
    plan.write_text(f"[defaults]\nwidth = 64\nheight = 64\nsteps = 2\n{shots}", encoding="utf-8")
    return plan


def _storyboard(invoke, pipeline, adapter, store, plan, out, *extra):
    return invoke("storyboard", str(plan), "--out", str(out), "--store", str(store), "--base-model", str(pipeline),
                  "--ip-adapter", str(adapter), "--device", "cpu", "--no-watermark", "--json", *extra)


def _takes(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((out / "attempts").rglob("*.json"))]


TWO_SHOTS = f"""
[[shots]]
id = "a"
prompt = "{PERSON} at a desk"
characters = ["{PERSON}"]
[[shots]]
id = "b"
prompt = "{PERSON} on a beach"
characters = ["{PERSON}"]
s_scale = 0.5
"""


# ---------------------------------------------------------------------------------- storyboard
@pytest.mark.slow
def test_storyboard_plus_v2_conditions_every_shot_on_the_stored_crops_encoded_once(
        invoke, tiny_models, plus_models, cli_store, tmp_path, monkeypatch):
    """Kills: the guard hook stopping a Plus storyboard; CLIP features not of the stored crops; the shot's
    s_scale not reaching the projection; the crops encoded again for every shot; no adapter_inputs in takes, or
    summary.json's shot entries without their kept take's adapter_inputs (or another shot's)."""
    import torch
    from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection
    from transformers import CLIPVisionModelWithProjection

    seen = Recorder(monkeypatch, IPAdapterFaceIDPlusImageProjection,
                    lambda m, args, out: (m.clip_embeds.clone(), m.shortcut, m.shortcut_scale))
    encoded = Recorder(monkeypatch, CLIPVisionModelWithProjection, lambda m, args, out: None)
    out = tmp_path / "run"
    result = _storyboard(invoke, tiny_models["pipeline"], plus_models["v2"], cli_store, _plan(tmp_path, TWO_SHOTS),
                         out, "--image-encoder", str(plus_models["encoder"]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["done"] + json.loads(result.stdout)["counts"]["failed_target"] == 2
    assert len(encoded.calls) == 2  # one encoding (crops, then zeros) for the whole storyboard

    references, _ = _stored_references(cli_store, crops=True)
    hidden, empty = _clip_hidden(plus_models["encoder"], [r.crop.aligned(224) for r in references])
    # 2 shots x 2 steps, under guidance: negatives (the encoder on zeros), then the mean of the 5 crops' features.
    assert len(seen.calls) == 4
    for clip, shortcut, _ in seen.calls:
        assert clip.shape == (2, 1, 17, 48) and shortcut is True
        assert torch.allclose(clip[1, 0], hidden.mean(0), atol=1e-5)
        assert torch.allclose(clip[0, 0], empty[0], atol=1e-5)
    assert [call[2] for call in seen.calls] == [1.0, 1.0, 0.5, 0.5]  # shot b's s_scale

    first, second = _takes(out)
    for take, s_scale in ((first, 1.0), (second, 0.5)):
        inputs = take["models"]["adapter_inputs"][PERSON]
        assert (inputs["variant"], inputs["references"], inputs["clip_references"], inputs["shortcut"],
                inputs["s_scale"]) == ("faceid-plusv2", 5, 5, True, s_scale)
        assert take["settings"]["s_scale"] == s_scale
        assert take["models"]["image_encoder"] == str(plus_models["encoder"])
    # summary.json: each shot carries its kept take's record (the shots differ by s_scale, so no other shot's).
    summary = json.loads((out / "summary.json").read_text())
    assert storyboard_summary_errors(summary) == []
    assert [shot["id"] for shot in summary["shots"]] == ["a", "b"]
    for shot, take in zip(summary["shots"], (first, second), strict=True):
        assert shot["kept"] and shot["adapter_inputs"] == take["models"]["adapter_inputs"]
    assert summary["shots"][1]["adapter_inputs"][PERSON]["s_scale"] == 0.5
    assert len(summary["shots"][0]["adapter_inputs"][PERSON]["clip_crops_sha256"]) == 5


@pytest.mark.slow
def test_storyboard_portrait_gets_one_token_group_per_reference(invoke, tiny_models, plus_models, cli_store,
                                                                tmp_path, monkeypatch):
    """Kills: a Portrait adapter run on the character's single mean vector (the old storyboard behaviour)."""
    import torch
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    seen = Recorder(monkeypatch, MultiIPAdapterImageProjection,
                    lambda m, args, out: (args[0][0].clone(), tuple(out[0].shape)))
    out = tmp_path / "run"
    result = _storyboard(invoke, tiny_models["pipeline"], plus_models["portrait"], cli_store,
                         _plan(tmp_path, TWO_SHOTS), out)
    assert result.returncode == 0, result.stderr
    take = _takes(out)[0]
    fingerprint = take["models"]["conditioning"]["fingerprint"]
    assert fingerprint.startswith("buffalo_l:")
    references, _ = _stored_references(cli_store, fingerprint)
    expected = np.stack([r.embeddings[fingerprint] / np.linalg.norm(r.embeddings[fingerprint]) for r in references])
    assert len(seen.calls) == 4
    for embeds, projected in seen.calls:
        assert embeds.shape == (2, 5, 512) and projected == (2, 5, 16, 32)  # 5 references x 16 tokens
        assert torch.count_nonzero(embeds[0]) == 0
        assert np.allclose(embeds[1].numpy(), expected, atol=1e-6)
    inputs = take["models"]["adapter_inputs"][PERSON]
    assert (inputs["variant"], inputs["identity_tokens"], inputs["identity_vectors"], inputs["references"]) == (
        "faceid-portrait", 80, 5, 5)


@pytest.mark.slow
def test_storyboard_several_characters_with_plus_is_one_line_before_loading(invoke, tiny_models, plus_models,
                                                                            cli_store, tmp_path):
    """Kills: the refusal coming from the pipeline call (after loading, per take) or without the shot."""
    plan = _plan(tmp_path, f"""
[[shots]]
id = "solo"
prompt = "{PERSON}"
characters = ["{PERSON}"]
[[shots]]
id = "pair"
prompt = "two people"
characters = ["{PERSON}", "{OTHER}"]
regions = {{ "{PERSON}" = "left", "{OTHER}" = "right" }}
""")
    out = tmp_path / "run"
    # A missing image encoder would fail at load: the plan's error comes first, with nothing loaded.
    result = _storyboard(invoke, tiny_models["pipeline"], plus_models["v2"], cli_store, plan, out,
                         "--image-encoder", str(tmp_path / "no-such-encoder"))
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "shot 2 (pair)" in line and "plain FaceID" in line and "faceid-plusv2" in line
    assert not out.exists()


def test_s_scale_in_a_plan_is_checked():
    from castkeep.errors import PlanError
    from castkeep.generation.storyboard.plan import parse_plan

    shots = [{"prompt": "x", "characters": ["A"], "s_scale": 0.6}]
    plan = parse_plan({"defaults": {"s_scale": 0.3}, "shots": shots + [{"prompt": "y", "characters": ["A"]}]})
    assert [shot.config().s_scale for shot in plan.shots] == [0.6, 0.3]
    with pytest.raises(PlanError, match=r"shot 1 \(shot-001\): s_scale: must be a number between 0 and 5"):
        parse_plan({"shots": [{"prompt": "x", "characters": ["A"], "s_scale": 5.5}]})
    with pytest.raises(PlanError, match="defaults: s_scale"):
        parse_plan({"defaults": {"s_scale": "strong"}, "shots": [{"prompt": "x", "characters": ["A"]}]})


# ---------------------------------------------------------------------------------- edits
@pytest.mark.slow
def test_fix_face_with_plus_v2_repaints_with_the_stored_crops_features(invoke, tiny_models, plus_models, cli_store,
                                                                       faces_dir, tmp_path, monkeypatch):
    """Kills: an edit with a Plus adapter stopping on the guard hook, or conditioned on other features; --s-scale
    not forwarded; no adapter_inputs in the edit sidecar (which must validate)."""
    import torch
    from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection

    seen = Recorder(monkeypatch, IPAdapterFaceIDPlusImageProjection,
                    lambda m, args, out: (m.clip_embeds.clone(), m.shortcut, m.shortcut_scale))
    photo = tmp_path / "in" / "gul.jpg"
    photo.parent.mkdir()
    shutil.copy(sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[-1], photo)
    out = tmp_path / "fixed.png"
    result = invoke("fix-face", str(photo), "--character", PERSON, "--store", str(cli_store), "--out", str(out),
                    "--base-model", str(tiny_models["pipeline"]), "--ip-adapter", str(plus_models["v2"]),
                    "--image-encoder", str(plus_models["encoder"]), "--s-scale", "0.6", "--steps", "3",
                    "--strength", "0.7", "--seed", "1", "--device", "cpu", "--no-watermark", "--json")
    assert result.returncode == 0, result.stderr
    references, _ = _stored_references(cli_store, crops=True)
    hidden, empty = _clip_hidden(plus_models["encoder"], [r.crop.aligned(224) for r in references])
    assert seen.calls  # int(3 x 0.7) = 2 denoising steps
    for clip, shortcut, s_scale in seen.calls:
        assert clip.shape == (2, 1, 17, 48) and shortcut is True and s_scale == 0.6
        assert torch.allclose(clip[1, 0], hidden.mean(0), atol=1e-5)
        assert torch.allclose(clip[0, 0], empty[0], atol=1e-5)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert edit_sidecar_errors(sidecar) == []
    (inputs,) = sidecar["models"]["adapter_inputs"]
    assert (inputs["variant"], inputs["clip_references"], inputs["s_scale"]) == ("faceid-plusv2", 5, 0.6)
    assert sidecar["models"]["image_encoder"] == str(plus_models["encoder"])
    assert sidecar["settings"]["s_scale"] == 0.6
    damaged = {**sidecar, "models": {**sidecar["models"], "adapter_inputs": [{**inputs, "variant": "faceid-max"}]}}
    assert edit_sidecar_errors(damaged)


@pytest.mark.slow
def test_fix_face_with_portrait_gets_one_token_group_per_reference(invoke, tiny_models, plus_models, cli_store,
                                                                   faces_dir, tmp_path, monkeypatch):
    """Kills: an edit with a Portrait adapter conditioned on the character's single mean vector, or on vectors
    of another space; no Portrait record in the edit sidecar."""
    import torch
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    seen = Recorder(monkeypatch, MultiIPAdapterImageProjection,
                    lambda m, args, out: (args[0][0].clone(), tuple(out[0].shape)))
    photo = tmp_path / "in" / "gul.jpg"
    photo.parent.mkdir()
    shutil.copy(sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[-1], photo)
    out = tmp_path / "fixed.png"
    result = invoke("fix-face", str(photo), "--character", PERSON, "--store", str(cli_store), "--out", str(out),
                    "--base-model", str(tiny_models["pipeline"]), "--ip-adapter", str(plus_models["portrait"]),
                    "--steps", "3", "--strength", "0.7", "--seed", "1", "--device", "cpu", "--no-watermark", "--json")
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert edit_sidecar_errors(sidecar) == []
    fingerprint = sidecar["models"]["conditioning"][0]["fingerprint"]  # one per --character
    assert fingerprint.startswith("buffalo_l:")  # the adapter's space, not the store's buffalo_s_lite
    references, _ = _stored_references(cli_store, fingerprint)
    expected = np.stack([r.embeddings[fingerprint] / np.linalg.norm(r.embeddings[fingerprint]) for r in references])
    assert seen.calls  # int(3 x 0.7) = 2 denoising steps
    for embeds, projected in seen.calls:
        assert embeds.shape == (2, 5, 512) and projected == (2, 5, 16, 32)  # 5 references x 16 tokens
        assert torch.count_nonzero(embeds[0]) == 0
        assert np.allclose(embeds[1].numpy(), expected, atol=1e-6)
    (inputs,) = sidecar["models"]["adapter_inputs"]
    assert (inputs["variant"], inputs["identity_tokens"], inputs["identity_vectors"], inputs["references"]) == (
        "faceid-portrait", 80, 5, 5)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_ray_worker_conditions_plus_v2_on_the_stored_crops(invoke, tiny_models, plus_models, cli_store, tmp_path):
    """One Ray worker on a local cluster (its own process: no hook reaches it): each take's record names the
    5 stored crops it encoded (their hashes) and the shot's s_scale. Kills: WorkerSpec without the image
    encoder / plus version, or identities sent to the workers without their crops."""
    import hashlib

    from test_storyboard_ray import ray_processes

    ray = pytest.importorskip("ray")
    before = ray_processes()
    out = tmp_path / "run"
    result = _storyboard(invoke, tiny_models["pipeline"], plus_models["v2"], cli_store, _plan(tmp_path, TWO_SHOTS),
                         out, "--image-encoder", str(plus_models["encoder"]), "--ray", "auto", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert not ray.is_initialized()
    references, _ = _stored_references(cli_store, crops=True)
    crops = [hashlib.sha256(np.ascontiguousarray(r.crop.aligned(224)).tobytes()).hexdigest()[:16] for r in references]
    for take, s_scale in zip(_takes(out), (1.0, 0.5), strict=True):
        inputs = take["models"]["adapter_inputs"][PERSON]
        assert (inputs["variant"], inputs["clip_crops_sha256"], inputs["s_scale"]) == ("faceid-plusv2", crops, s_scale)
    deadline = time.monotonic() + 30
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes() - before
