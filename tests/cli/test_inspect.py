"""`castkeep inspect IMAGE...` through the console entry point: what a castkeep output, a plain photo and
other generators' files carry, and bad input as one line with exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

SIDECAR = {"schema": "castkeep.generation.sidecar/3", "castkeep_version": "0.1.0", "seed": 7,
           "character": {"name": "Ada", "source": "store", "fingerprint": "buffalo_l:w600k_r50.onnx:0123",
                         "vector_sha256": "0123456789abcdef"},
           "score": {"probability": 0.87, "scorer": "fused"}, "models": {"base_model": "models/sd15"}}


@pytest.fixture(scope="module")
def signed_output(tmp_path_factory, faces_dir) -> tuple[Path, Path]:
    """A real generated image written as a castkeep output: watermark, text chunks and C2PA credentials."""
    from c2pa_certs import write_chain

    from castkeep.generation.provenance.credentials import C2paCredentials
    from castkeep.generation.provenance.output import Provenance

    folder = tmp_path_factory.mktemp("inspect")
    chain = write_chain(folder / "certs")
    source = next(path for path in sorted((faces_dir / "generated_dev" / "images").glob("*/*.jpg"))
                  if min(Image.open(path).size) >= 256)
    provenance = Provenance(credentials=C2paCredentials.from_files(chain.cert, chain.key))
    provenance.save_png(Image.open(source).convert("RGB"), folder / "Ada_01_s7.png",
                        "portrait\nSteps: 30, Sampler: DDIM, Seed: 7, Size: 512x512", SIDECAR)
    return folder / "Ada_01_s7.png", chain.ca


@pytest.mark.generation
def test_inspect_shows_what_a_castkeep_output_carries(invoke, signed_output):
    path, ca = signed_output
    text = invoke("inspect", str(path))
    assert text.returncode == 0, text.stderr
    assert "watermark: castkeep watermark found (dwtDctSvd, 0 of 48 bits differ)" in text.stdout
    assert "parameters (A1111): Steps: 30, Sampler: DDIM, Seed: 7" in text.stdout
    assert "castkeep sidecar: Ada, seed 7, P(same) 0.870 (fused)" in text.stdout
    assert "c2pa: valid, signer not trusted (no trust anchor for it); signed by castkeep test signer" in text.stdout
    assert "c2pa.created by castkeep 0.1.0 (trainedAlgorithmicMedia)" in text.stdout
    assert "character Ada: vector 0123456789abcdef" in text.stdout
    anchored = invoke("inspect", str(path), "--c2pa-trust", str(ca), "--json")
    assert anchored.returncode == 0, anchored.stderr
    carried = json.loads(anchored.stdout)
    assert carried["c2pa"]["validation_state"] == "Trusted" and carried["c2pa"]["failures"] == []
    assert carried["watermark"]["status"] == "found" and carried["castkeep"] == {
        **SIDECAR, "provenance": carried["castkeep"]["provenance"]}
    assert carried["parameters"]["fields"]["Sampler"] == "DDIM" and carried["other_generators"] == []


@pytest.mark.generation
def test_inspect_a_plain_photo_and_other_generators_files(invoke, faces_dir, tmp_path):
    photo = faces_dir / "deepface_celebs" / "angelina_jolie" / "img1.jpg"
    small = next((faces_dir / "lfw_gallery").rglob("*.jpg"))
    comfy = tmp_path / "comfy.png"
    info = PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler"}}))
    info.add_text("workflow", json.dumps({"nodes": []}))
    Image.open(photo).convert("RGB").save(comfy, pnginfo=info)
    result = invoke("inspect", str(photo), str(small), str(comfy), "--json")
    assert result.returncode == 0, result.stderr
    plain, tiny, comfy_result = json.loads(result.stdout)["images"]
    assert plain["watermark"]["status"] == "not found" and plain["format"] == "JPEG"
    assert plain["parameters"] is None and plain["castkeep"] is None and plain["c2pa"] is None
    assert tiny["watermark"]["status"] == "too small"
    assert comfy_result["other_generators"] == [{"chunk": "prompt", "tool": "ComfyUI"}, {"chunk": "workflow", "tool": "ComfyUI"}]
    text = invoke("inspect", str(small)).stdout
    assert "image too small to carry a watermark" in text and "c2pa: none" in text


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "text", "directory"])
def test_bad_input_is_one_line_with_exit_3(invoke, bad_image, faces_dir, kind):
    path = bad_image(kind, next((faces_dir / "lfw_gallery").rglob("*.jpg")))
    result = invoke("inspect", str(path))
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_keep_going_reports_the_bad_file_and_the_rest(invoke, bad_image, faces_dir, tmp_path):
    photo = next((faces_dir / "lfw_gallery").rglob("*.jpg"))
    bad = bad_image("truncated", photo)
    result = invoke("inspect", str(bad), str(photo), "--keep-going", "--json")
    assert result.returncode == 3
    broken, good = json.loads(result.stdout)["images"]
    assert "truncated" in broken["error"] and good["width"] == 250
