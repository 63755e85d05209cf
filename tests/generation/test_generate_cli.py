"""Scoring against a real character store on real photos, and `castkeep generate` end to end in a
subprocess (tiny pipeline on disk, real store, real face models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from castkeep.generation.metadata import parse_a1111_parameters, read_png_text, schema_errors
from castkeep.generation.scoring import IdentityScorer
from castkeep.generation.testing import save_tiny_faceid, save_tiny_pipeline
from castkeep.identity.store import Store

PEOPLE = ("Abdullah_Gul", "Adrien_Brody")


def photos(faces_dir: Path, person: str) -> list[Path]:
    return sorted((faces_dir / "lfw_gallery" / person).glob("*.jpg"))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, faces_dir, fast_analyzer) -> Path:
    folder = tmp_path_factory.mktemp("store")
    with Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, photos(faces_dir, person)[:3])
    return folder


def test_real_photos_score_against_the_store(store_dir, faces_dir, fast_analyzer):
    with Store.open(store_dir, analyzer=fast_analyzer, create=False) as store:
        character = store.get(PEOPLE[0])
        scorer = IdentityScorer(fast_analyzer, character.vector, name=character.name, store=store)
        own = scorer.score(Image.open(photos(faces_dir, PEOPLE[0])[4]))
        other = scorer.score(Image.open(photos(faces_dir, PEOPLE[1])[4]))
    assert own.face_found and own.same and own.leakage is False and own.probability > 0.5
    assert own.pose is not None and set(own.pose) >= {"yaw", "pitch", "roll"}
    # Another stored character's photo: low cosine, and the store names who it leaks to.
    assert other.face_found and not other.same and other.cosine < own.cosine
    assert other.leakage is True and other.closest_other["name"] == PEOPLE[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-cli")
    pipeline = save_tiny_pipeline(root / "sd15")
    return pipeline, save_tiny_faceid(root / "ip-adapter-faceid_tiny.safetensors", pipeline)


def test_generate_command_end_to_end(cli, tiny, store_dir, tmp_path):
    pipeline, adapter = tiny
    out = tmp_path / "out"
    result = cli("generate", PEOPLE[0], "portrait, studio light", "--base-model", str(pipeline),
                 "--ip-adapter", str(adapter), "--store", str(store_dir), "--out", str(out), "--steps", "2",
                 "--num-images", "2", "--best-of", "3", "--seed", "9", "--aspect", "3:2", "--device", "cpu",
                 "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["character"]["name"] == PEOPLE[0] and summary["character"]["source"] == "store"
    assert [a["seed"] for a in summary["attempts"]] == [9, 10, 11]
    assert len(summary["outputs"]) == 2 and summary["width"] > summary["height"]
    for output in summary["outputs"]:
        sidecar = json.loads((out / output["sidecar"]).read_text())
        assert schema_errors(sidecar) == [] and sidecar["score"]["face_found"] is False
        assert sidecar["models"]["face_analyzer"] == sidecar["character"]["fingerprint"]
        params = parse_a1111_parameters(read_png_text(out / output["file"])["parameters"])
        assert params["Character"] == PEOPLE[0] and params["Seed"] == str(output["seed"])
    assert (out / "contact_sheet.png").is_file() and (out / "summary.json").is_file()


def test_generate_bad_input_is_one_line(cli, tiny, store_dir, tmp_path):
    pipeline, adapter = tiny
    unknown = cli("generate", "Nobody", "x", "--base-model", str(pipeline), "--ip-adapter", str(adapter),
                  "--store", str(store_dir), "--out", str(tmp_path / "a"))
    assert unknown.returncode == 8 and unknown.stderr.startswith("error:") and len(unknown.stderr.splitlines()) == 1
    offline = cli("generate", PEOPLE[0], "x", "--base-model", "castkeep-test/not-cached", "--ip-adapter",
                  str(adapter), "--store", str(store_dir), "--out", str(tmp_path / "b"), env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 6, offline.stderr
    last = offline.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "huggingface-cli download castkeep-test/not-cached" in last
    assert "Traceback" not in offline.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


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
