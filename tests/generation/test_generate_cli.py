"""Scoring against a real character store on real photos, and `castkeep generate` end to end (tiny
pipeline on disk, real store, real face models): in-process through the console entry point, and once
in a real process for what only a fresh interpreter shows (torch is not imported by other commands)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from castkeep.generation.metadata import parse_a1111_parameters, read_png_text, sidecar_errors, summary_errors
from castkeep.generation.scoring import IdentityScorer
from castkeep.identity.store import Store

PEOPLE = ("Abdullah_Gul", "Adrien_Brody")


def photos(faces_dir: Path, person: str) -> list[Path]:
    return sorted((faces_dir / "lfw_gallery" / person).glob("*.jpg"))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, faces_dir, fast_analyzer, buffalo_l_pack) -> Path:
    """Both people registered with buffalo_s_lite; only the first also embedded in buffalo_l's space, the
    one h94's FaceID adapters were trained on."""
    folder = tmp_path_factory.mktemp("store")
    with Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, photos(faces_dir, person)[:3])
        store.reembed(PEOPLE[0], models=buffalo_l_pack)
    return folder


def test_real_photos_score_against_the_store(store_dir, faces_dir, fast_analyzer):
    with Store.open(store_dir, analyzer=fast_analyzer, create=False) as store:
        character = store.get(PEOPLE[0])
        scorer = IdentityScorer(fast_analyzer, character.vector, name=character.name, store=store)
        own = scorer.score(Image.open(photos(faces_dir, PEOPLE[0])[4]))
        other = scorer.score(Image.open(photos(faces_dir, PEOPLE[1])[4]))
    assert own.face_found and own.same and own.leakage is False and own.probability > 0.5
    assert own.scorer == "arcface" and own.domain == "generated" and own.agreement is None
    assert own.pose is not None and set(own.pose) >= {"yaw", "pitch", "roll"}
    # Another stored character's photo: low cosine, and the store names who it leaks to.
    assert other.face_found and not other.same and other.cosine < own.cosine
    assert other.leakage is True and other.closest_other["name"] == PEOPLE[1]


def test_outputs_are_judged_by_dlib_and_the_fusion_as_generated_images(store_dir, faces_dir, fast_analyzer):
    """Real photos stand in for outputs: every scorer judges them in the generated domain, the fused judge
    decides, and ArcFace and dlib's agreement is recorded."""
    from castkeep.identity import domains
    from castkeep.identity.dlib_recogniser import DlibRecogniser

    with Store.open(store_dir, analyzer=fast_analyzer, create=False) as store:
        character = store.get(PEOPLE[0])
        scorer = IdentityScorer(fast_analyzer, character.vector, name=character.name, store=store, judge="fused",
                                recogniser=DlibRecogniser())
        own = scorer.score(Image.open(photos(faces_dir, PEOPLE[0])[4]))
        other = scorer.score(Image.open(photos(faces_dir, PEOPLE[1])[4]))
    assert set(own.scores) == {"arcface", "dlib", "fused"} and own.scorer == "fused"
    assert all(verdict["domain"] == "generated" for verdict in own.scores.values())
    assert own.scores["arcface"]["threshold"] == pytest.approx(domains.ARCFACE["generated"].threshold, abs=1e-4)
    assert own.same and round(own.probability, 4) == own.scores["fused"]["probability"] and own.value > other.value
    assert own.agreement == {"conditioning": True, "independent": True, "disagree": False, "kind": None}
    assert not other.same and other.leakage is True and other.closest_other["name"] == PEOPLE[1]


@pytest.mark.generation
def test_generate_command_end_to_end(invoke, tiny_models, store_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke("generate", PEOPLE[0], "portrait, studio light", "--negative", "blurry, lowres",
                    "--base-model", str(tiny_models["pipeline"]), "--ip-adapter", str(tiny_models["faceid"]),
                    "--store", str(store_dir), "--out", str(out), "--steps", "2", "--num-images", "2",
                    "--best-of", "3", "--seed", "9", "--aspect", "3:2", "--id-scale", "0.45", "--device", "cpu",
                    "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary_errors(json.loads((out / "summary.json").read_text())) == []
    assert summary["character"]["name"] == PEOPLE[0] and summary["character"]["source"] == "store"
    assert [a["seed"] for a in summary["attempts"]] == [9, 10, 11]
    assert len(summary["outputs"]) == 2 and summary["width"] > summary["height"]
    # Every option reached the run: what the sidecar records is what was asked for.
    assert summary["settings"]["id_scale"] == 0.45 and summary["settings"]["steps"] == 2
    assert summary["negative_prompt"] == "blurry, lowres" and summary["settings"]["best_of"] == 3
    # Conditioned in buffalo_l's space (h94's file name says so), scored by the store's own pack + dlib.
    conditioning = summary["models"]["conditioning"]
    assert conditioning["pack"] == "buffalo_l" and conditioning["declared_by"] == "file name"
    assert conditioning["fingerprint"].startswith("buffalo_l:w600k_r50.onnx:")
    assert summary["scoring"] == {"scorer": "fused", "domain": "generated", "rule": summary["scoring"]["rule"]}
    for output in summary["outputs"]:
        sidecar = json.loads((out / output["sidecar"]).read_text())
        assert sidecar_errors(sidecar) == [] and sidecar["score"]["face_found"] is False
        assert sidecar["character"]["fingerprint"] == conditioning["fingerprint"]
        assert sidecar["models"]["face_analyzer"].startswith("buffalo_s_lite:")
        params = parse_a1111_parameters(read_png_text(out / output["file"])["parameters"])
        assert params["Character"] == PEOPLE[0] and params["Seed"] == str(output["seed"])
        assert params["negative_prompt"] == "blurry, lowres" and params["IP-Adapter weight"] == "0.45"
    assert (out / "contact_sheet.png").is_file() and (out / "summary.json").is_file()


@pytest.mark.generation
def test_generate_bad_input_is_one_line(invoke, tiny_models, store_dir, tmp_path):
    adapter = str(tiny_models["faceid"])
    unknown = invoke("generate", "Nobody", "x", "--base-model", str(tiny_models["pipeline"]), "--ip-adapter",
                     adapter, "--store", str(store_dir), "--out", str(tmp_path / "a"))
    assert unknown.returncode == 8 and unknown.stderr.startswith("error:") and len(unknown.stderr.splitlines()) == 1
    offline = invoke("generate", PEOPLE[0], "x", "--base-model", "castkeep-test/not-cached", "--ip-adapter",
                     adapter, "--store", str(store_dir), "--out", str(tmp_path / "b"), env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 6, offline.stderr
    # A "loading ..." progress line comes first; the error is the one last line.
    *progress_lines, line = offline.stderr.strip().splitlines()
    assert [text.startswith("loading ") for text in progress_lines] == [True]
    assert line.startswith("error:") and "huggingface-cli download castkeep-test/not-cached" in line
    bad_setting = invoke("generate", PEOPLE[0], "x", "--base-model", str(tiny_models["pipeline"]), "--ip-adapter",
                         adapter, "--store", str(store_dir), "--out", str(tmp_path / "c"), "--width", "500")
    assert bad_setting.returncode not in (0, 1, 70) and bad_setting.stderr.startswith("error:")
    assert "multiple of 8" in bad_setting.stderr
    huge = invoke("generate", PEOPLE[0], "x", "--base-model", str(tiny_models["pipeline"]), "--ip-adapter", adapter,
                  "--store", str(store_dir), "--out", str(tmp_path / "d"), "--width", "800000", "--height", "8")
    assert huge.returncode == 15 and huge.stderr.startswith("error: --width 800000 is too large"), huge.stderr
    assert not any((tmp_path / name).exists() for name in "abcd")


@pytest.mark.generation
def test_the_adapter_gets_a_vector_of_its_own_space_or_one_line_naming_the_fix(invoke, tiny_models, store_dir,
                                                                               pack_dir, tmp_path):
    base = ("--base-model", str(tiny_models["pipeline"]), "--store", str(store_dir), "--steps", "1", "--json")
    # h94's FaceID file and a character with only a buffalo_s vector: the fix, in one line, before loading.
    wrong = invoke("generate", PEOPLE[1], "x", "--ip-adapter", str(tiny_models["faceid"]), "--out",
                   str(tmp_path / "a"), *base)
    assert wrong.returncode == 20 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert f"castkeep reembed {PEOPLE[1]} --models buffalo_l" in wrong.stderr and "buffalo_s_lite" in wrong.stderr
    # An adapter castkeep does not know must say what it was trained on...
    unknown = invoke("generate", PEOPLE[1], "x", "--ip-adapter", str(tiny_models["plain"]), "--out",
                     str(tmp_path / "b"), *base)
    assert unknown.returncode == 14 and "--conditioning-models" in unknown.stderr
    # ...and ranking by the very model that conditioned the images is refused.
    same_model = invoke("generate", PEOPLE[1], "x", "--ip-adapter", str(tiny_models["plain"]), "--conditioning-models",
                        str(pack_dir), "--scorer", "arcface", "--out", str(tmp_path / "c"), *base)
    assert same_model.returncode == 14 and "--scorer fused" in same_model.stderr
    assert not any((tmp_path / name).exists() for name in "abc")
    # Told the space, it runs: the store's primary space is the conditioning one, recorded as told.
    told = invoke("generate", PEOPLE[1], "x", "--ip-adapter", str(tiny_models["plain"]), "--conditioning-models",
                  "buffalo_s_lite", "--scorer", "dlib", "--out", str(tmp_path / "d"), *base)
    assert told.returncode == 0, told.stderr
    summary = json.loads(told.stdout)
    assert summary["models"]["conditioning"]["declared_by"] == "--conditioning-models"
    assert summary["character"]["fingerprint"] == summary["models"]["face_analyzer"]
    assert summary["scoring"]["scorer"] == "dlib" and summary_errors(summary) == []


@pytest.mark.subprocess
def test_torch_is_imported_only_by_generation_commands(cli):
    code = ("import sys, castkeep.cli.main as m; from click.testing import CliRunner; "
            "r = CliRunner().invoke(m.cli, ['analyze', '--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(m.cli, ['--help']); assert 'generate' in r.output; "
            "print(sorted(n for n in ('torch', 'diffusers', 'transformers') if n in sys.modules))")
    checked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "[]"
    help_text = cli("generate", "--help")
    assert help_text.returncode == 0 and "--best-of" in help_text.stdout and "--min-score" in help_text.stdout


# ---------------------------------------------------------------------------------- provenance
@pytest.fixture(scope="module")
def tiny_256(tiny_models, tmp_path_factory) -> Path:
    """The tiny pipeline with a 128-latent UNet: 256x256 outputs, the smallest that carry a watermark (the
    FaceID checkpoint fits it unchanged: the sample size changes no weight)."""
    from tiny_pipelines import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    pipe.unet.register_to_config(sample_size=128)
    folder = tmp_path_factory.mktemp("tiny-256") / "tiny-sd15-256"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _generate_256(invoke, tiny_256, tiny_models, store_dir, out: Path, *extra: str, env=None):
    return invoke("generate", PEOPLE[0], "portrait", "--base-model", str(tiny_256), "--ip-adapter",
                  str(tiny_models["faceid"]), "--store", str(store_dir), "--out", str(out), "--steps", "2",
                  "--seed", "5", "--device", "cpu", "--json", *extra, env=env)


@pytest.mark.generation
@pytest.mark.slow
def test_generate_watermarks_its_outputs_unless_told_not_to(invoke, tiny_256, tiny_models, store_dir, tmp_path):
    from castkeep.generation.provenance.inspection import inspect_image

    marked = _generate_256(invoke, tiny_256, tiny_models, store_dir, tmp_path / "marked")
    assert marked.returncode == 0, marked.stderr
    summary = json.loads(marked.stdout)
    assert summary["width"] == summary["height"] == 256 and summary_errors(summary) == []
    assert summary["provenance"] == {"watermark": {"method": "dwtDctSvd", "payload": "8132ff19dd01"}, "c2pa": None}
    output = tmp_path / "marked" / summary["outputs"][0]["file"]
    sidecar = json.loads(output.with_suffix(".json").read_text())
    assert sidecar_errors(sidecar) == [] and sidecar["provenance"]["watermark"]["applied"] is True
    assert inspect_image(output)["watermark"]["status"] == "found"
    assert inspect_image(tmp_path / "marked" / "contact_sheet.png")["watermark"]["status"] == "found"

    plain = _generate_256(invoke, tiny_256, tiny_models, store_dir, tmp_path / "plain", "--no-watermark")
    assert plain.returncode == 0, plain.stderr
    summary = json.loads(plain.stdout)
    assert summary["provenance"]["watermark"] is None
    output = tmp_path / "plain" / summary["outputs"][0]["file"]
    assert json.loads(output.with_suffix(".json").read_text())["provenance"]["watermark"] is None
    reading = inspect_image(output)["watermark"]
    assert reading["status"] == "not found" and reading["bit_errors"] > 6
    assert inspect_image(tmp_path / "plain" / "contact_sheet.png")["watermark"]["status"] == "not found"


@pytest.mark.generation
@pytest.mark.slow
def test_generate_signs_content_credentials_with_the_users_certificate(invoke, tiny_256, tiny_models, store_dir,
                                                                       tmp_path, fast_analyzer):
    from c2pa_certs import write_chain

    from castkeep.generation.provenance.credentials import UNTRUSTED, read_credentials

    chain = write_chain(tmp_path / "certs")
    # Half the pair is a one-line error before anything loads.
    half = _generate_256(invoke, tiny_256, tiny_models, store_dir, tmp_path / "half", "--c2pa-cert", str(chain.cert))
    assert half.returncode == 14 and "--c2pa-key" in half.stderr and len(half.stderr.strip().splitlines()) == 1
    wrong = _generate_256(invoke, tiny_256, tiny_models, store_dir, tmp_path / "wrong", "--c2pa-cert", str(chain.cert),
                          "--c2pa-key", str(write_chain(tmp_path / "other").key))
    assert wrong.returncode == 14 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert not (tmp_path / "half").exists() and not (tmp_path / "wrong").exists()

    signed = _generate_256(invoke, tiny_256, tiny_models, store_dir, tmp_path / "signed",
                           env={"CASTKEEP_C2PA_CERT": str(chain.cert), "CASTKEEP_C2PA_KEY": str(chain.key)})
    assert signed.returncode == 0, signed.stderr
    summary = json.loads(signed.stdout)
    assert summary["provenance"]["c2pa"]["algorithm"] == "es256" and summary_errors(summary) == []
    output = tmp_path / "signed" / summary["outputs"][0]["file"]
    credentials = read_credentials(output.read_bytes(), "image/png")
    assert credentials["problems"] == [] and [f["code"] for f in credentials["failures"]] == [UNTRUSTED]
    sidecar = json.loads(output.with_suffix(".json").read_text())
    (character,) = credentials["castkeep"]["characters"]
    assert character == {key: sidecar["character"][key] for key in ("name", "source", "fingerprint", "vector_sha256")}
    assert credentials["castkeep"]["models"]["ip_adapter_hash"] == sidecar["models"]["ip_adapter_hash"]
    # No face data: none of the stored vector's values appear in the signed file.
    with Store.open(store_dir, analyzer=fast_analyzer, create=False) as store:
        vector = store.get(PEOPLE[0]).vector
    data = output.read_bytes()
    assert not any(f"{value:.6f}".encode() in data for value in vector[:32])
