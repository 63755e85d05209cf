"""The files a generation run writes, without generating: the shipped JSON Schemas of the sidecar,
summary.json and a storyboard's summary.json (and what they refuse), and the A1111 `parameters` text other
tools read."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from castkeep.generation.metadata import (
    SCHEMA_DIR,
    SCHEMA_FILES,
    SIDECAR_SCHEMA_ID,
    a1111_parameters,
    parse_a1111_parameters,
    sidecar_errors,
    storyboard_summary_errors,
    summary_errors,
)
from castkeep.generation.runner import SUMMARY_SCHEMA_ID, Identity
from castkeep.generation.scoring import OutputScore
from castkeep.generation.storyboard.ledger import AttemptRow, Ledger
from castkeep.generation.storyboard.plan import parse_plan
from castkeep.generation.storyboard.report import SUMMARY_SCHEMA_ID as STORYBOARD_SCHEMA_ID
from castkeep.generation.storyboard.report import build_summary
from castkeep.generation.storyboard.shot_run import ShotTiming

ROOT = SCHEMA_DIR.parent.parent
VERDICTS = {"arcface": {"scorer": "arcface", "domain": "generated", "score": 0.61, "metric": "cosine", "threshold": 0.1239,
                        "same": True, "probability": 0.99},
            "dlib": {"scorer": "dlib", "domain": "generated", "score": 0.74, "metric": "euclidean distance",
                     "threshold": 0.7079, "same": False, "probability": 0.29},
            "fused": {"scorer": "fused", "domain": "generated", "score": 1.9, "metric": "log-odds", "threshold": 0.0,
                      "same": True, "probability": 0.87}}
SCORE = {"face_found": True, "faces": 1, "cosine": 0.61, "probability": 0.87, "same": True, "threshold": 0.0,
         "scorer": "fused", "metric": "log-odds", "score": 1.9, "domain": "generated", "scores": VERDICTS,
         "agreement": {"conditioning": True, "independent": False, "disagree": True, "kind": "conditioning-only"},
         "leakage": False, "closest_other": None, "pose": {"yaw": 3.1, "pitch": -2.0, "roll": 0.4},
         "det_score": 0.81, "bbox": [10.0, 12.5, 50.0, 61.0], "quality": {"usable": True}, "error": None}
ATTEMPT = {"attempt": 0, "seed": 7, "face_found": True, "cosine": 0.61, "probability": 0.87, "disagree": True,
           "leakage": False,
           "passed": True, "kept": True, "rank": 1, "file": "Ada_01_s7.png", "seconds": 1.5}
SIDECAR = {
    "schema": SIDECAR_SCHEMA_ID, "castkeep_version": "0.1.0", "image": "Ada_01_s7.png", "width": 512, "height": 768,
    "prompt": "portrait", "negative_prompt": "blurry", "seed": 7,
    "settings": {"seed": 7, "steps": 30, "guidance": 7.5, "id_scale": 0.8, "width": 512, "height": 768,
                 "aspect": "2:3", "num_images": 1, "scheduler": "default", "sampler": "DDIM", "device": "cuda",
                 "requested_device": "auto", "dtype": "float16", "best_of": 1, "scorer": "fused", "min_score": None,
                 "max_tries": None,
                 "batch_size": 1},
    "models": {"base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5", "base_model_kind": "sd15",
               "base_model_hash": "a" * 64, "ip_adapter": "h94/IP-Adapter-FaceID",
               "ip_adapter_file": "ip-adapter-faceid_sd15.bin", "ip_adapter_hash": "b" * 64,
               "ip_adapter_variant": "faceid", "faceid_lora": False, "face_analyzer": "buffalo_s:w600k_mbf.onnx:4567",
               "conditioning": {"pack": "buffalo_l", "recogniser": "w600k_r50.onnx", "declared_by": "file name",
                                "fingerprint": "buffalo_l:w600k_r50.onnx:0123"}},
    "character": {"name": "Ada", "fingerprint": "buffalo_l:w600k_r50.onnx:0123", "source": "store",
                  "vector_sha256": "0123456789abcdef"},
    "score": SCORE, "nsfw": None,
    "selection": {"rank": 1, "kept": True, "passed": True, "attempt": 0, "min_score": None, "best_of": 1,
                  "rule": "passing outputs first, then highest P(same person) by the fused scorer"},
    "attempts": [ATTEMPT], "created_at": "2025-11-24T16:53:09+00:00",
    "provenance": {"watermark": {"method": "dwtDctSvd", "payload": "8132ff19dd01", "applied": True, "reason": None},
                   "c2pa": {"algorithm": "es256", "signer": {"common_name": "Ada's studio", "organization": None}}},
}
SUMMARY = {
    "schema": SUMMARY_SCHEMA_ID, "castkeep_version": "0.1.0", "created_at": "2025-11-24T16:53:09+00:00",
    "character": SIDECAR["character"], "prompt": "portrait", "negative_prompt": "blurry", "seed": 7, "width": 512,
    "height": 768, "settings": SIDECAR["settings"], "models": SIDECAR["models"],
    "outputs": [{"file": "Ada_01_s7.png", "sidecar": "Ada_01_s7.json", "rank": 1, "attempt": 0, "seed": 7,
                 "score": SCORE}],
    "attempts": [ATTEMPT], "target_met": True, "min_score": None, "face_found": 1, "mean_cosine": 0.61,
    "mean_probability": 0.87, "scoring": {"scorer": "fused", "domain": "generated", "rule": "passing outputs first"},
    "agreement": {"judged": 1, "disagree": 1, "conditioning_only": ["Ada_01_s7.png"], "independent_only": []},
    "consistency": {"labels": ["Ada_01_s7.png"], "matrix": [[1.0]], "mean_pairwise_cosine": None},
    "contact_sheet": "contact_sheet.png",
    "timing": {"images_generated": 1, "generate_s": 1.5, "s_per_image": 1.5, "s_per_step": 0.05}, "warnings": [],
    "provenance": {"watermark": {"method": "dwtDctSvd", "payload": "8132ff19dd01"}, "c2pa": None},
}


def test_the_schemas_are_valid_draft_2020_12_and_name_the_ids_castkeep_writes():
    from jsonschema import Draft202012Validator

    schemas = {kind: json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8")) for kind, name in SCHEMA_FILES.items()}
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    assert schemas["sidecar"]["properties"]["schema"] == {"const": SIDECAR_SCHEMA_ID}
    assert schemas["summary"]["properties"]["schema"] == {"const": SUMMARY_SCHEMA_ID}
    assert schemas["storyboard"]["properties"]["schema"] == {"const": STORYBOARD_SCHEMA_ID}


def test_the_schemas_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["castkeep.generation"]
    shipped = {path.name for pattern in patterns for path in SCHEMA_DIR.parent.glob(pattern)}
    assert set(SCHEMA_FILES.values()) <= shipped


def test_valid_examples_have_no_errors():
    assert sidecar_errors(SIDECAR) == []
    assert summary_errors(SUMMARY) == []


def damaged(data: dict, path: str, value: object) -> dict:
    """A deep copy of `data` with the value at dotted `path` replaced (or removed, for `...`)."""
    copied = copy.deepcopy(data)
    *parents, last = path.split(".")
    target = copied
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return copied


@pytest.mark.parametrize("path, value, where", [
    ("seed", -3, "$.seed"),
    ("seed", 2**32, "$.seed"),
    ("width", 500, "$.width"),  # not a multiple of 8
    ("attempts", ..., "$"),
    ("attempts", [], "$.attempts"),
    ("schema", "castkeep.generation.sidecar/1", "$.schema"),  # the version before scorers and spaces
    ("schema", "castkeep.generation.sidecar/2", "$.schema"),  # the version before provenance
    ("provenance", ..., "$"),
    ("provenance.watermark.payload", "castkeep", "$.provenance.watermark"),
    ("provenance.watermark.applied", None, "$.provenance.watermark"),
    ("provenance.c2pa.algorithm", "rs256", "$.provenance.c2pa"),  # C2PA signs with PSS, never PKCS#1 v1.5
    ("score.scorer", "clip", "$.score"),
    ("score.scores.dlib.probability", 1.5, "$.score.scores.dlib.probability"),
    ("models.conditioning.declared_by", "a guess", "$.models.conditioning.declared_by"),
    ("score.face_found", "yes", "$.score.face_found"),
    ("score.cosine", 1.5, "$.score.cosine"),
    ("score.face_found", False, "$.score"),  # no face, yet a cosine and a face count
    ("settings.device", "auto", "$.settings.device"),  # the device it ran on, never "auto"
    ("settings.id_scale", None, "$.settings.id_scale"),
    ("models.ip_adapter_hash", "abc", "$.models.ip_adapter_hash"),
    ("selection.rank", None, "$.selection"),  # kept, yet no rank
    ("attempts.0.seed", "7", "$.attempts[0].seed"),
    ("created_at", "yesterday", "$.created_at"),
])
def test_sidecar_errors_name_the_damage(path, value, where):
    errors = sidecar_errors(damaged(SIDECAR, path, value))
    assert errors and all(error.startswith(where) for error in errors), errors


@pytest.mark.parametrize("path, value, where", [
    ("outputs", [], "$.outputs"),
    ("outputs.0.score.threshold", "0.27", "$.outputs[0].score.threshold"),
    ("consistency.matrix", [[2.0]], "$.consistency.matrix[0][0]"),
    ("timing.images_generated", 0, "$.timing.images_generated"),
    ("target_met", None, "$.target_met"),
    ("provenance.watermark.method", "dwtDct", "$.provenance.watermark"),
])
def test_summary_errors_name_the_damage(path, value, where):
    errors = summary_errors(damaged(SUMMARY, path, value))
    assert errors and all(error.startswith(where) for error in errors), errors


ADAPTER_INPUTS = {"variant": "faceid", "identity_tokens": 4, "identity_vectors": 1, "references": None,
                  "reference_rule": None, "shortcut": None, "s_scale": None, "clip_references": None,
                  "clip_crops_sha256": None, "image_encoder": None, "image_encoder_hash": None}


@pytest.fixture(scope="module")
def storyboard_summary(tmp_path_factory) -> dict:
    """report.build_summary over a real ledger holding a shot in every state, without generating: s1 done (one
    character, its take's sidecar giving the adapter inputs), s2 below target (a cast: Bo got no face of the two),
    s3 an error, s4 running, s5 pending; one session finished, the second still open."""
    run = tmp_path_factory.mktemp("storyboard")
    plan = parse_plan({"title": "Tiny series", "seed": 5, "shots": [
        {"id": "s1", "prompt": "Ada at a desk", "characters": ["Ada"], "caption": "Morning"},
        {"id": "s2", "prompt": "both talking", "characters": ["Ada", "Bo"], "regions": {"Ada": "left", "Bo": "right"},
         "min_score": 0.9},
        {"id": "s3", "prompt": "Bo running", "characters": ["Bo"]},
        {"id": "s4", "prompt": "Ada waving", "characters": ["Ada"]},
        {"id": "s5", "prompt": "Bo asleep", "characters": ["Bo"]}]})
    identities = {name: Identity(name, np.full(512, index + 1.0, dtype=np.float32), source="store")
                  for index, name in enumerate(("Ada", "Bo"))}
    found = {**SCORE, "faces": 2}
    unassigned = OutputScore(face_found=False, faces=2).to_dict()  # a face in the image, none left for Bo
    scores: dict[str, dict[str, Any]] = {
        "s1": {"characters": {"Ada": {**SCORE, "log_odds": 1.9, "region": None, "passed": True}}, "value": 1.9,
               "probability": 0.87, "face_found": True, "passed": True, "flags": []},
        "s2": {"characters": {"Ada": {**found, "log_odds": 1.9, "region": "left", "face": 0, "in_region": True,
                                      "better_match": None, "passed": False},
                              "Bo": {**unassigned, "log_odds": None, "region": "right", "face": None, "in_region": False,
                                     "better_match": None, "passed": False}},
               "value": None, "probability": None, "face_found": False, "passed": False,
               "flags": ["below target: Ada", "no face: Bo"]}}
    with Ledger.open(run) as ledger:
        ledger.start_session()
        ledger.set_meta(title=plan.title, plan=None, models=SIDECAR["models"], shots=[shot.id for shot in plan.shots])
        for shot in plan.shots[:2]:
            ledger.begin_shot(shot.id, shot.number, "key")
            take = f"attempts/{shot.id}/{shot.id}_try00_s{shot.seed}.png"
            (run / take).parent.mkdir(parents=True)
            (run / take).with_suffix(".json").write_text(json.dumps({"models": {"adapter_inputs": {
                name: ADAPTER_INPUTS for name in shot.characters}}}))
            ledger.record_attempt(shot.id, "key", AttemptRow(
                attempt=0, seed=shot.seed, file=take, sha256="a" * 64, sidecar=take[:-4] + ".json",
                sidecar_sha256="b" * 64, passed=shot.id == "s1", value=1.9, score=scores[shot.id], pipeline_s=1.2,
                scoring_s=0.3, write_s=0.1))
            kept = {"file": f"shots/{shot.id}.png", "sha256": "c" * 64, "sidecar": f"shots/{shot.id}.json",
                    "sidecar_sha256": "d" * 64, "attempt": 0, "rank": 1, "seed": shot.seed, "passed": shot.id == "s1"}
            ledger.finish_shot(shot.id, target_met=shot.id == "s1", kept=[kept],
                               timing=ShotTiming(images=1, pipeline_s=1.2, scoring_s=0.3, workers=["in-process"]
                                                 ).to_dict(1.7))
        ledger.begin_shot("s3", 3, "key")
        ledger.fail_shot("s3", "CUDA out of memory")
        ledger.finish_session("interrupted")
        ledger.start_session()
        ledger.begin_shot("s4", 4, "key")
        return build_summary(plan, ledger, identities)


def test_a_storyboard_summary_with_a_shot_in_every_state_is_valid(storyboard_summary):
    assert [shot["state"] for shot in storyboard_summary["shots"]] == [
        "done", "failed-target", "error", "running", "pending"]
    assert storyboard_summary["shots"][0]["adapter_inputs"] == {"Ada": ADAPTER_INPUTS}
    assert storyboard_summary["timing"]["overhead_share_of_pipeline"] is not None
    assert storyboard_summary_errors(storyboard_summary) == []


@pytest.mark.parametrize("path, value, where", [
    ("schema", "castkeep.generation.summary/3", "$.schema"),  # a generate run's summary id
    ("shots.2.state", ..., "$.shots[2]"),
    ("shots.4.state", "queued", "$.shots[4].state"),
    ("shots.0.target_met", False, "$.shots[0].target_met"),  # done, yet its target missed
    ("shots.1.kept", [], "$.shots[1].kept"),  # finished without a kept image
    ("shots.0.kept.0.sha256", "abc", "$.shots[0].kept[0].sha256"),
    ("shots.0.score.characters.Ada.face_found", False, "$.shots[0].score.characters.Ada"),  # no face, yet a cosine
    ("shots.1.score.characters.Bo.in_region", ..., "$.shots[1].score.characters.Bo"),  # a cast's placement
    ("shots.0.adapter_inputs.Ada.variant", "faceid-xl", "$.shots[0].adapter_inputs.Ada.variant"),
    ("shots.0.timing.split.workers", "in-process", "$.shots[0].timing.split.workers"),
    ("table.probability.Ada.0", 1.5, "$.table.probability.Ada[0]"),
    ("sessions.1.outcome", "crashed", "$.sessions[1].outcome"),
    ("counts.unfinished", ..., "$.counts"),
])
def test_storyboard_summary_errors_name_the_damage(storyboard_summary, path, value, where):
    errors = storyboard_summary_errors(damaged(storyboard_summary, path, value))
    assert errors and all(error.startswith(where) for error in errors), errors


def test_a1111_parameters_round_trip_quoting_commas_and_colons():
    fields = {"Steps": 30, "Sampler": "DPM++ 2M Karras", "CFG scale": 7.5, "Seed": 42, "Size": "512x768",
              "Model": "v1-5, pruned", "Character": "Dr: Ada", "Empty": "", "Missing": None}
    text = a1111_parameters("portrait, soft light", "blurry,  lowres", fields)
    assert text.splitlines()[1] == "Negative prompt: blurry,  lowres"
    parsed = parse_a1111_parameters(text)
    assert parsed["prompt"] == "portrait, soft light" and parsed["negative_prompt"] == "blurry,  lowres"
    assert {key: parsed[key] for key in ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Character")} == {
        "Steps": "30", "Sampler": "DPM++ 2M Karras", "CFG scale": "7.5", "Seed": "42", "Size": "512x768",
        "Model": "v1-5, pruned", "Character": "Dr: Ada"}
    assert "Empty" not in parsed and "Missing" not in parsed
