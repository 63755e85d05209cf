"""Provenance of outputs without generating: castkeep's invisible watermark on real generated images (round
trip through PNG and `inspect`, JPEG quality 90, no false positives on unmarked photos, images too small to
carry one) and C2PA Content Credentials signed with a throwaway certificate chain (valid but for the
untrusted signer, trusted with its root as anchor, tamper-evident, holding no face data).

invisible-watermark and c2pa-python come with the [generate] extra: the module is in the generation lane."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.errors import ConfigError
from castkeep.generation.provenance.credentials import (
    TRAINED_ALGORITHMIC_MEDIA,
    UNTRUSTED,
    C2paCredentials,
    read_credentials,
)
from castkeep.generation.provenance.inspection import inspect_image
from castkeep.generation.provenance.output import Provenance
from castkeep.generation.provenance.watermark import MAX_BIT_ERRORS, PAYLOAD, read_watermark

pytestmark = pytest.mark.generation

CHARACTER = {"name": "Ada", "source": "store", "fingerprint": "buffalo_l:w600k_r50.onnx:0123",
             "vector_sha256": "0123456789abcdef"}
MODELS = {"base_model": "models/sd15", "base_model_hash": "a" * 64, "ip_adapter_file": "ip-adapter-faceid_sd15.bin",
          "ip_adapter_hash": "b" * 64, "conditioning": {"pack": "buffalo_l", "fingerprint": CHARACTER["fingerprint"]}}
SIDECAR = {"castkeep_version": "0.1.0", "seed": 7, "character": CHARACTER, "models": MODELS}


def generated_images(faces_dir: Path, count: int) -> list[Path]:
    """Every tenth generated_dev image of at least 256 px a side (read only: outputs go to tmp)."""
    images = sorted(path for path in (faces_dir / "generated_dev" / "images").glob("*/*.jpg")
                    if min(Image.open(path).size) >= 256)
    return images[::10][:count]


def save(provenance: Provenance, image: Image.Image, path: Path, sidecar: dict = SIDECAR) -> dict:
    return provenance.save_png(image, path, "portrait\nSteps: 2, Seed: 7", sidecar)


def jpeg(path: Path, quality: int) -> Path:
    target = path.with_name(f"{path.stem}_q{quality}.jpg")
    Image.open(path).convert("RGB").save(target, quality=quality)
    return target


@pytest.fixture(scope="module")
def marked(faces_dir, tmp_path_factory) -> list[tuple[Path, Image.Image]]:
    """Five real generated images, written as castkeep outputs (watermark on), with their originals."""
    folder = tmp_path_factory.mktemp("marked")
    pairs = []
    for number, source in enumerate(generated_images(faces_dir, 5)):
        original = Image.open(source).convert("RGB")
        save(Provenance(), original, folder / f"out{number}.png")
        pairs.append((folder / f"out{number}.png", original))
    return pairs


def write_chain(folder: Path, **options):
    from c2pa_certs import write_chain  # cryptography comes with [generate]

    return write_chain(folder, **options)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return write_chain(tmp_path_factory.mktemp("c2pa"))


# ---------------------------------------------------------------------------------- watermark
def test_the_watermark_round_trips_through_the_png_and_inspect(marked):
    for path, original in marked:
        carried = inspect_image(path)
        assert carried["watermark"]["status"] == "found", path
        assert carried["watermark"]["bit_errors"] == 0 and carried["watermark"]["payload"] == PAYLOAD.hex()
        assert carried["castkeep"]["provenance"]["watermark"] == {"method": "dwtDctSvd", "payload": PAYLOAD.hex(),
                                                                  "applied": True, "reason": None}
        # Invisible: a peak signal-to-noise ratio above 40 dB against the unmarked image (measured 41.6-42.0).
        difference = np.asarray(Image.open(path), np.float64) - np.asarray(original, np.float64)[:, :, :3]
        assert 10 * np.log10(255**2 / np.mean(difference**2)) > 40


def test_the_watermark_survives_jpeg_quality_90(marked):
    for path, _ in marked:
        reading = inspect_image(jpeg(path, 90))["watermark"]
        assert reading["status"] == "found" and reading["bit_errors"] <= 2, (path, reading)


@pytest.mark.slow  # imwatermark's own import loads torch
def test_invisible_watermark_itself_reads_castkeeps_payload(marked):
    """castkeep runs the package's dwtDctSvd unchanged: the package's own public decoder finds the payload."""
    from imwatermark import WatermarkDecoder

    path, _ = marked[0]
    bgr = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"), np.float32)[:, :, ::-1])
    assert WatermarkDecoder("bytes", 8 * len(PAYLOAD)).decode(bgr, "dwtDctSvd") == PAYLOAD


@pytest.mark.slow
def test_marking_all_blocks_at_once_is_invisible_watermarks_own_block_loop(faces_dir):
    """watermark.py marks every 4x4 block in one array operation; the package's `encode_frame` loops over
    them in Python. Same marks: a pixel differs by one level at most (float rounding), on very few pixels."""
    import cv2
    import pywt

    from castkeep.generation.provenance import watermark

    def package_loop(image: Image.Image) -> np.ndarray:
        embedder = watermark._embedder_class()(watermark._payload_bits(), wmLen=watermark.PAYLOAD_BITS,
                                               scales=[0, watermark.SCALE, 0])
        bgr = watermark._bgr_float(image)
        rows, cols = bgr.shape[0] // 4 * 4, bgr.shape[1] // 4 * 4
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
        low, details = pywt.dwt2(yuv[:rows, :cols, 1], "haar")
        embedder.encode_frame(low, watermark.SCALE)
        yuv[:rows, :cols, 1] = pywt.idwt2((low, details), "haar")
        return np.clip(np.rint(cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)[:, :, ::-1]), 0, 255).astype(np.uint8)

    noise = np.random.default_rng(3).integers(0, 256, (262, 330, 3), dtype=np.uint8)  # sides not multiples of 8
    images = [Image.open(path).convert("RGB") for path in generated_images(faces_dir, 3)] + [Image.fromarray(noise)]
    for image in images:
        ours = np.asarray(watermark.embed_watermark(image), dtype=np.int16)
        theirs = package_loop(image).astype(np.int16)
        assert np.abs(ours - theirs).max() <= 1 and np.count_nonzero(ours != theirs) < 1e-4 * ours.size
        assert watermark.read_watermark(Image.fromarray(ours.astype(np.uint8))).bit_errors == 0


def test_unmarked_photos_carry_no_watermark(faces_dir):
    """No false positive: real generated images and photos, as they are and after JPEG, read far from the payload."""
    others = [faces_dir / name for name in (
        "deepface_celebs/angelina_jolie/img1.jpg", "deepface_celebs/elon_musk/img18.jpg", "groups/bbt1.jpg",
        "yale/subject01/glasses.png", "fr_examples/alex_lacamoire/alex-lacamoire.png")]
    photos = generated_images(faces_dir, 6) + others
    readings = [read_watermark(Image.open(photo).convert("RGB")) for photo in photos]
    assert [r.status for r in readings] == ["not found"] * len(photos)
    assert min(r.bit_errors for r in readings if r.bit_errors is not None) > 2 * MAX_BIT_ERRORS


def test_images_under_256x256_are_left_unmarked_and_said_so(tmp_path, faces_dir):
    sidecar = save(Provenance(), Image.new("RGB", (64, 64), (90, 140, 200)), tmp_path / "tiny.png")
    assert sidecar["provenance"]["watermark"]["applied"] is False and "256x256" in sidecar["provenance"]["watermark"]["reason"]
    assert inspect_image(tmp_path / "tiny.png")["watermark"]["status"] == "too small"
    lfw = next((faces_dir / "lfw_gallery").rglob("*.jpg"))  # 250x250: just under
    assert inspect_image(lfw)["watermark"]["status"] == "too small"


def test_no_watermark_leaves_the_pixels_as_generated(faces_dir, tmp_path):
    original = Image.open(generated_images(faces_dir, 1)[0]).convert("RGB")
    sidecar = save(Provenance(watermark=False), original, tmp_path / "plain.png")
    assert sidecar["provenance"] == {"watermark": None, "c2pa": None}
    assert np.array_equal(np.asarray(Image.open(tmp_path / "plain.png")), np.asarray(original))
    assert inspect_image(tmp_path / "plain.png")["watermark"]["status"] == "not found"


# ---------------------------------------------------------------------------------- C2PA
def signed_output(chain, folder: Path, sidecar: dict = SIDECAR) -> Path:
    provenance = Provenance(credentials=C2paCredentials.from_files(chain.cert, chain.key))
    save(provenance, Image.new("RGB", (320, 256), (90, 140, 200)), folder / "signed.png", sidecar)
    return folder / "signed.png"


def test_signed_output_validates_but_for_the_untrusted_signer(chain, tmp_path):
    path = signed_output(chain, tmp_path)
    credentials = read_credentials(path.read_bytes(), "image/png")
    # A throwaway chain no trust list anchors: intact and valid, the signer untrusted (by definition).
    assert credentials["validation_state"] == "Valid" and credentials["problems"] == []
    assert [failure["code"] for failure in credentials["failures"]] == [UNTRUSTED]
    assert credentials["signer"]["common_name"] == "castkeep test signer"
    assert credentials["actions"] == [{"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                       "softwareAgent": {"name": "castkeep", "version": "0.1.0"}}]
    generation = credentials["castkeep"]
    assert generation["characters"] == [CHARACTER] and generation["models"]["base_model_hash"] == "a" * 64
    assert generation["watermark"]["applied"] is True
    # Its root as a trust anchor: the same file is trusted, with no failure at all.
    anchored = read_credentials(path.read_bytes(), "image/png", trust_anchors=chain.ca.read_bytes())
    assert anchored["validation_state"] == "Trusted" and anchored["failures"] == []
    # The watermark and the text chunks survive signing, and the sidecar names the signer.
    carried = inspect_image(path)
    assert carried["watermark"]["status"] == "found" and carried["parameters"]["fields"]["Seed"] == "7"
    assert carried["castkeep"]["provenance"]["c2pa"] == {
        "algorithm": "es256", "signer": {"common_name": "castkeep test signer", "organization": "castkeep tests"}}


def test_a_single_self_signed_certificate_signs_too(tmp_path):
    path = signed_output(write_chain(tmp_path / "self", self_signed_signer=True), tmp_path)
    credentials = read_credentials(path.read_bytes(), "image/png")
    assert credentials["problems"] == [] and [f["code"] for f in credentials["failures"]] == [UNTRUSTED]


def test_the_manifest_holds_fingerprints_never_face_data(chain, tmp_path):
    """Whatever a sidecar carries, only listed fields enter the manifest: an embedding slipped into the
    character (or the score) never reaches it."""
    import c2pa

    vector = [0.0123456, -0.0654321, 0.0987654]
    sidecar = {**SIDECAR, "character": {**CHARACTER, "embedding": vector},
               "score": {"embedding": vector, "probability": 0.87}}
    path = signed_output(chain, tmp_path, sidecar)
    with c2pa.Reader("image/png", io.BytesIO(path.read_bytes())) as reader:
        manifest_store = reader.json()
    assert CHARACTER["vector_sha256"] in manifest_store and CHARACTER["fingerprint"] in manifest_store
    assert not any(str(value) in manifest_store for value in vector)
    assert "embedding" not in manifest_store and re.search(r"\d\.\d{5,}", manifest_store) is None


def test_a_changed_pixel_breaks_the_credentials(chain, tmp_path):
    path = signed_output(chain, tmp_path)
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 20] ^= 0xFF
    credentials = read_credentials(bytes(data), "image/png")
    assert credentials["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in [problem["code"] for problem in credentials["problems"]]


def test_unusable_certificates_and_keys_are_one_line_config_errors(chain, tmp_path):
    other = write_chain(tmp_path / "other")
    cases = [(chain.cert, other.key, "signature"), (chain.cert, chain.cert, "private key"),
             (chain.key, chain.key, "certificate"), (tmp_path / "missing.pem", chain.key, "cannot read")]
    for cert, key, reason in cases:
        with pytest.raises(ConfigError) as caught:
            C2paCredentials.from_files(cert, key)
        assert reason in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_a_file_without_credentials_reads_as_none(marked):
    assert read_credentials(marked[0][0].read_bytes(), "image/png") is None
    assert json.loads(json.dumps(inspect_image(marked[0][0])))["c2pa"] is None


# ---------------------------------------------------------------------------------- storyboard files
@pytest.mark.slow
def test_storyboard_takes_are_marked_and_kept_copies_keep_the_marks(faces_dir, chain, tmp_path):
    """generation/storyboard/files.py writes every take through the same marking: watermark on by default,
    C2PA when asked; a kept shot is a byte copy, so it keeps both."""
    from castkeep.generation.runner import Identity
    from castkeep.generation.storyboard.files import write_kept, write_take
    from castkeep.generation.storyboard.plan import Shot
    from castkeep.generation.storyboard.shot import Take

    shot = Shot(number=1, id="p01", prompt="Ada at the market", negative="", characters=("Ada",), seed=7, settings={})
    identities = {"Ada": Identity("Ada", np.ones(512, np.float32), fingerprint=CHARACTER["fingerprint"], source="store")}
    image = Image.open(generated_images(faces_dir, 1)[0]).convert("RGB")
    take = Take(attempt=0, seed=7, image=image, score={"probability": 0.8}, value=1.4, passed=True)
    settings = {"sampler": "DDIM"}
    models = {**SIDECAR["models"], "base_model_kind": "sd15", "faceid_lora": None}

    default = write_take(tmp_path / "default", shot, shot.config(), take, identities, settings, models)
    assert inspect_image(tmp_path / "default" / default.file)["watermark"]["status"] == "found"
    plain = write_take(tmp_path / "plain", shot, shot.config(), take, identities, settings, models,
                       Provenance(watermark=False))
    carried = inspect_image(tmp_path / "plain" / plain.file)
    assert carried["watermark"]["status"] == "not found" and carried["castkeep"]["provenance"]["watermark"] is None

    signed = Provenance(credentials=C2paCredentials.from_files(chain.cert, chain.key))
    row = write_take(tmp_path / "signed", shot, shot.config(), take, identities, settings, models, signed)
    (entry,) = write_kept(tmp_path / "signed", shot, shot.config(), [row], [row])
    kept = inspect_image(tmp_path / "signed" / entry["file"])
    assert kept["watermark"]["status"] == "found" and kept["c2pa"]["problems"] == []
    assert [c["name"] for c in kept["c2pa"]["castkeep"]["characters"]] == ["Ada"]
