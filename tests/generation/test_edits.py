"""The editing commands end to end on tiny random pipelines (SD1.5 and SDXL, text-to-image through
`from_pipe` and 9-channel inpainting checkpoints), a real store and real face models on real photos:
fix-face changes pixels only inside its feathered face-oval mask and keeps the original when the judge
sees no improvement, outpaint keeps the original pixels, upscale gives the requested size, and bad input
is one line with its exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.identity.store import Store

PERSON = "Abdullah_Gul"
pytestmark = pytest.mark.generation


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, faces_dir, fast_analyzer, buffalo_l_pack) -> Path:
    """PERSON registered with buffalo_s_lite (the scoring pack) and embedded in buffalo_l's space (the
    one h94's FaceID adapters condition on)."""
    folder = tmp_path_factory.mktemp("store")
    with Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        store.register(PERSON, sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[:3])
        store.reembed(PERSON, models=buffalo_l_pack)
    return folder


@pytest.fixture(scope="module")
def more_models(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """SDXL text-to-image and the SD1.5/SDXL inpainting checkpoints, each with its FaceID file."""
    from tiny_pipelines import save_tiny_faceid, save_tiny_inpaint_pipeline, save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-edit-models")
    sdxl = save_tiny_pipeline(root / "sdxl", sdxl=True)
    inpaint = save_tiny_inpaint_pipeline(root / "sd15-inpaint")
    sdxl_inpaint = save_tiny_inpaint_pipeline(root / "sdxl-inpaint", sdxl=True)
    return {
        "sdxl": sdxl, "sdxl_faceid": save_tiny_faceid(root / "a" / "ip-adapter-faceid_sdxl.bin", sdxl),
        "inpaint": inpaint, "inpaint_faceid": save_tiny_faceid(root / "b" / "ip-adapter-faceid_sd15.bin", inpaint),
        "sdxl_inpaint": sdxl_inpaint,
        "sdxl_inpaint_faceid": save_tiny_faceid(root / "c" / "ip-adapter-faceid_sdxl.bin", sdxl_inpaint),
    }


@pytest.fixture
def photo(faces_dir, tmp_path) -> Path:
    """A copy of a real photo (the shared ones are never written near)."""
    target = tmp_path / "in" / "gul.jpg"
    target.parent.mkdir()
    shutil.copy(sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[4], target)
    return target


def rgb(path: Path) -> np.ndarray:
    from castkeep.landmarks.images import load_pil

    return np.asarray(load_pil(path))


def weights(base: Path, adapter: Path) -> tuple[str, ...]:
    """The tiny weights, and no watermark: it changes every pixel faintly, and these tests check bytes."""
    return ("--base-model", str(base), "--ip-adapter", str(adapter), "--device", "cpu", "--no-watermark")


def run_json(invoke, *args: str) -> dict:
    """The command's --json report; the sidecar it wrote is valid against schemas/edit.schema.json."""
    from castkeep.generation.metadata import edit_sidecar_errors

    result = invoke(*args, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if "sidecar_path" in report:
        assert edit_sidecar_errors(json.loads(Path(report["sidecar_path"]).read_text())) == []
    return report


def test_fix_face_changes_only_pixels_inside_the_feathered_face_oval(invoke, tiny_models, store_dir, faces_dir,
                                                                     tmp_path):
    """Two faces of a group photo, one character for both, every repaint pasted (--keep always)."""
    image = tmp_path / "group.jpg"
    shutil.copy(faces_dir / "groups" / "bbt3.jpg", image)
    out = tmp_path / "fixed.png"
    report = run_json(invoke, "fix-face", str(image), "--character", PERSON, "--face", "0", "--face", "1",
                      "--keep", "always", "--strength", "0.5", "--steps", "4", "--seed", "3", "--store",
                      str(store_dir), "--out", str(out), *weights(tiny_models["pipeline"], tiny_models["faceid"]))
    assert [face["face"] for face in report["faces"]] == [0, 1] and all(f["kept"] for f in report["faces"])
    for face in report["faces"]:
        assert face["character"] == PERSON and face["before"]["face_found"] and face["before"]["scorer"] == "fused"
        assert set(face["after"]) >= {"face_found", "probability"} and face["mask"]["pixels"] > 0
    before, after = rgb(image), rgb(out)
    mask = np.asarray(Image.open(out.with_suffix(".mask.png")))
    changed = np.any(before != after, axis=2)
    assert after.shape == before.shape and changed.sum() > 100
    assert not (changed & (mask == 0)).any()  # exactly: no pixel outside the feathered mask moved
    # The mask is the face ovals, not boxes: a small part of the image, with soft (feathered) edges.
    assert 0 < (mask > 0).mean() < 0.2 and ((mask > 0) & (mask < 255)).sum() > 100
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["command"] == "fix-face" and sidecar["seed"] == 3 and sidecar["settings"]["strength"] == 0.5
    assert sidecar["models"]["conditioning"][0]["pack"] == "buffalo_l"


def test_fix_face_keeps_the_original_when_the_judge_sees_no_improvement(invoke, more_models, store_dir, photo,
                                                                         tmp_path):
    """A 9-channel SD1.5 inpainting checkpoint repaints the face with noise (strength 1): the judge finds it
    worse, so the output is the input's pixels, and the report says so."""
    out = tmp_path / "kept.png"
    report = run_json(invoke, "fix-face", str(photo), "--character", PERSON, "--strength", "1", "--steps", "2",
                      "--store", str(store_dir), "--out", str(out),
                      *weights(more_models["inpaint"], more_models["inpaint_faceid"]))
    (face,) = report["faces"]
    assert face["before"]["face_found"] and face["before"]["probability"] > 0.5
    assert face["improved"] is False and face["kept"] is False and report["changed"] is False
    assert np.array_equal(rgb(photo), rgb(out))
    assert report["models"]["base_model_kind"] == "sd15" and report["source"]["sha256"]


def test_fix_face_on_sdxl(invoke, more_models, store_dir, photo, tmp_path):
    out = tmp_path / "xl.png"
    report = run_json(invoke, "fix-face", str(photo), "--character", PERSON, "--keep", "always", "--steps", "3",
                      "--store", str(store_dir), "--out", str(out),
                      *weights(more_models["sdxl"], more_models["sdxl_faceid"]))
    assert report["models"]["base_model_kind"] == "sdxl" and report["faces"][0]["kept"]
    changed = np.any(rgb(photo) != rgb(out), axis=2)
    assert changed.any() and not (changed & (np.asarray(Image.open(out.with_suffix(".mask.png"))) == 0)).any()


@pytest.mark.parametrize("kind", ["hair", "file"])
def test_edit_repaints_only_the_mask(invoke, tiny_models, more_models, store_dir, photo, tmp_path, kind):
    out = tmp_path / f"edit-{kind}.png"
    if kind == "file":  # a hand-made mask on the SDXL inpainting checkpoint
        mask_file = tmp_path / "mask.png"
        mask = np.zeros((250, 250), np.uint8)
        mask[150:240, 20:120] = 255
        Image.fromarray(mask).save(mask_file)
        args = ("--mask", str(mask_file), *weights(more_models["sdxl_inpaint"], more_models["sdxl_inpaint_faceid"]))
    else:
        args = ("--mask", "hair", *weights(tiny_models["pipeline"], tiny_models["faceid"]))
    report = run_json(invoke, "edit", str(photo), "short grey hair", "--character", PERSON, "--steps", "3",
                      "--store", str(store_dir), "--out", str(out), *args)
    saved = np.asarray(Image.open(out.with_suffix(".mask.png")))
    changed = np.any(rgb(photo) != rgb(out), axis=2)
    assert changed.any() and not (changed & (saved == 0)).any()
    assert report["prompt"] == "short grey hair" and report["face"]["before"]["face_found"]
    if kind == "file":
        assert report["mask"]["kind"] == "file" and not changed[:140].any()
    else:  # hair: above and around the face, never the face oval's centre
        assert report["mask"]["kind"] == "hair" and saved[125, 125] == 0 and (saved[:100] > 0).any()


def test_outpaint_keeps_the_original_pixels(invoke, tiny_models, store_dir, photo, tmp_path):
    out = tmp_path / "wide.png"
    report = run_json(invoke, "outpaint", str(photo), "--character", PERSON, "--aspect", "16:9", "--steps", "2",
                      "--store", str(store_dir), "--out", str(out), *weights(tiny_models["pipeline"],
                                                                             tiny_models["faceid"]))
    result = rgb(out)
    x1, y1, x2, y2 = report["original_box"]
    assert result.shape == (250, 444, 3) and (x1, y1, x2, y2) == (97, 0, 347, 250)
    assert np.array_equal(result[y1:y2, x1:x2], rgb(photo))
    assert report["face"]["before"]["face_found"] and report["face"]["after"]["face_found"]
    assert report["face"]["after"]["probability"] == pytest.approx(report["face"]["before"]["probability"], abs=0.05)


def test_upscale_gives_the_requested_size(invoke, tiny_models, store_dir, photo, tmp_path):
    """The tiled detail pass on a 124 px crop of the face, to 128 px: 3 x 3 overlapping 64 px tiles of
    the tiny model (every tile path: the first, the inner, the last flush with the edge)."""
    small = tmp_path / "small.png"
    Image.open(photo).crop((63, 63, 187, 187)).save(small)
    out = tmp_path / "big.png"
    report = run_json(invoke, "upscale", str(small), "--to", "128", "--character", PERSON, "--steps", "2",
                      "--strength", "0.5", "--store", str(store_dir), "--out", str(out),
                      *weights(tiny_models["pipeline"], tiny_models["faceid"]))
    assert Image.open(out).size == (128, 128) and report["settings"]["tiles"] == 9
    assert set(report["face"]) == {"before", "after"} and report["settings"]["mode"] == "diffusion"
    # Lanczos: no model at all, 2K on the long side.
    plain = run_json(invoke, "upscale", str(photo), "--to", "2k", "--mode", "lanczos", "--out", str(tmp_path / "2k.png"))
    assert Image.open(tmp_path / "2k.png").size == (2048, 2048) and plain["models"] is None
    assert plain["provenance"]["watermark"]["applied"] is True  # marked like every output, by default


def test_tiles_cover_the_image_and_blend_to_the_identity():
    """Tile starts cover every pixel with the last flush to the edge; the blending weights never vanish, so
    tiles that return their input give back the input exactly."""
    from castkeep.generation.edits.upscale import positions, ramp

    for length, tile in ((128, 64), (200, 64), (64, 64), (1000, 512)):
        starts = positions(length, tile, tile // 8)
        covered = np.zeros(length, bool)
        for start in starts:
            covered[start:start + tile] = True
        assert covered.all() and starts[0] == 0 and starts[-1] + tile == length
        assert (ramp(tile, tile // 8) > 0).all()


def test_bad_input_is_one_line(invoke, tiny_models, store_dir, photo, tmp_path, bad_image):
    missing_weights = ("--base-model", str(tmp_path / "no-model"), "--ip-adapter", str(tmp_path / "no-adapter.bin"))
    store = ("--store", str(store_dir))
    wrong_mask = tmp_path / "small-mask.png"
    Image.new("L", (100, 80), 255).save(wrong_mask)
    noface = bad_image("noface", photo)
    cases = {  # exit code, what the line says; the missing weights prove they were never reached
        "mask": (3, "mask is 100x80 but the image is 250x250", ("edit", str(photo), "x", "--character", PERSON,
                                                                 "--mask", str(wrong_mask), *store, *missing_weights)),
        "noface": (4, "no face found", ("fix-face", str(noface), "--character", PERSON, *store,
                                        *weights(tiny_models["pipeline"], tiny_models["faceid"]))),
        "upscale": (15, "too large", ("upscale", str(photo), "--to", "20000", "--character", PERSON, *store,
                                      *missing_weights)),
        "character": (8, "Nobody", ("fix-face", str(photo), "--character", "Nobody", *store, *missing_weights)),
    }
    for name, (code, text, args) in cases.items():
        result = invoke(*args, "--out", str(tmp_path / f"out-{name}.png"))
        assert result.returncode == code, (name, result.stderr)
        assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert text in result.stderr and not (tmp_path / f"out-{name}.png").exists()
