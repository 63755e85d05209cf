"""The public API, used the way the README shows: `import castkeep`, then compare, a store round
trip, and scored generation (tiny diffusers pipeline on disk, real store, real face models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import castkeep
from castkeep.errors import StoreError, UnknownCharacterError, UnknownSpaceError

HEAVY = ("torch", "diffusers", "transformers", "onnxruntime", "faiss", "insightface", "mediapipe", "cv2")
PEOPLE = ("Abdullah_Gul", "Adrien_Brody")


def photos(faces_dir: Path, person: str) -> list[Path]:
    return sorted((faces_dir / "lfw_gallery" / person).glob("*.jpg"))


def _loaded_after(code: str) -> list[str]:
    """Heavy libraries in sys.modules after running `code` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    checked = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr
    return json.loads(checked.stdout.strip().replace("'", '"'))


# ---------------------------------------------------------------------------------- the namespace
@pytest.mark.subprocess
def test_import_castkeep_loads_no_heavy_library():
    assert _loaded_after("import castkeep") == []
    # Naming the generation API does not load torch either: only using it does.
    assert not {"torch", "diffusers", "transformers"} & set(_loaded_after(
        "import castkeep; castkeep.Generator; castkeep.generate; castkeep.compare; castkeep.GenerationConfig"))


def test_every_public_name_resolves_to_the_library_object():
    from castkeep.generation.generator import Generator
    from castkeep.identity.comparison import compare
    from castkeep.identity.store import Store
    from castkeep.landmarks.model_pack import ModelPack

    assert set(castkeep.__all__) == set(castkeep._LAZY) | {"CastkeepError", "__version__"}
    for name in castkeep.__all__:
        assert getattr(castkeep, name) is not None, name
    assert castkeep.Store is Store and castkeep.compare is compare and castkeep.Generator is Generator
    assert castkeep.ModelPack is ModelPack and set(castkeep.__all__) <= set(dir(castkeep))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        castkeep.nope  # noqa: B018


# ---------------------------------------------------------------------------------- compare
def test_compare_same_and_different_people(faces_dir, pack_dir):
    celebs = faces_dir / "deepface_celebs"
    same = castkeep.compare(celebs / "angelina_jolie" / "img1.jpg", celebs / "angelina_jolie" / "img2.jpg",
                            models=pack_dir)
    other = castkeep.compare(celebs / "angelina_jolie" / "img1.jpg", celebs / "mark_zuckerberg" / "img13.jpg",
                             models=pack_dir)
    assert isinstance(same, castkeep.Comparison)
    assert same.same is True and same.similarity >= same.threshold and same.probability > 0.5
    assert other.same is False and other.similarity < other.threshold and other.probability < 0.5
    assert same.threshold == castkeep.SAME_PERSON_THRESHOLD and same.providers == ["CPUExecutionProvider"]
    data = same.to_dict()
    assert data["same"] is True and data["similarity"] == round(same.similarity, 4) and data["model"] == same.model


def test_compare_picks_faces_and_reuses_a_loaded_analyzer(faces_dir, fast_analyzer):
    group = faces_dir / "groups" / "fr_two_people.jpg"
    itself = castkeep.compare(group, group, analyzer=fast_analyzer)
    two_people = castkeep.compare(group, group, face_b=1, analyzer=fast_analyzer)
    assert itself.same and itself.similarity > 0.99 and (itself.face_a, itself.face_b) == (0, 0)
    assert not two_people.same and two_people.face_b == 1
    assert two_people.model == fast_analyzer.fingerprint
    # A stricter threshold changes the verdict, not the calibrated probability.
    strict = castkeep.compare(group, group, face_b=1, analyzer=fast_analyzer, threshold=-1.0)
    assert strict.same and strict.probability == two_people.probability


# ---------------------------------------------------------------------------------- store
def test_store_round_trip(tmp_path, faces_dir, fast_analyzer):
    folder = tmp_path / "cast"
    with pytest.raises(StoreError):
        castkeep.Store.open(folder, create=False)  # reading never creates a store
    assert not (folder / "castkeep.sqlite3").exists()
    with castkeep.Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, photos(faces_dir, person)[:3], tags=["cast"])
    with castkeep.Store.open(folder, analyzer=fast_analyzer, create=False) as store:
        assert store.names() == sorted(PEOPLE) and len(store) == 2
        probe = photos(faces_dir, PEOPLE[1])[4]
        matches = store.identify(probe, k=2)
        assert [m.name for m in matches] == [PEOPLE[1], PEOPLE[0]] and matches[0].same
        own, other = store.score(probe, PEOPLE[1]), store.score(probe, PEOPLE[0])
        assert own.same and not own.leakage and own.cosine > other.cosine
        assert not other.same and other.leakage and other.closest_other.name == PEOPLE[1]
        assert store.get(PEOPLE[0]).tags == ["cast"]


# ---------------------------------------------------------------------------------- generation
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    from tiny_pipelines import save_tiny_faceid, save_tiny_pipeline  # tests/generation (pytest pythonpath)

    root = tmp_path_factory.mktemp("tiny-api")
    pipeline = save_tiny_pipeline(root / "sd15")
    return pipeline, save_tiny_faceid(root / "ip-adapter-faceid_sd15.bin", pipeline)  # h94's name: buffalo_l


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, faces_dir, fast_analyzer, buffalo_l_pack) -> Path:
    folder = tmp_path_factory.mktemp("api-store")
    with castkeep.Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, photos(faces_dir, person)[:3])
        store.reembed(None, models=buffalo_l_pack)  # the space h94's FaceID adapters take
    return folder


@pytest.fixture(scope="module")
def generator(tiny):
    pipeline, adapter = tiny
    return castkeep.Generator.from_pretrained(pipeline, adapter, device="cpu")


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return vector / np.linalg.norm(vector)


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(Image.open(result.out_dir / a.file)) for a in result.kept]


@pytest.mark.generation
@pytest.mark.slow
def test_generator_runs_a_stored_character(generator, store_dir, pack_dir, tmp_path):
    result = generator.generate(PEOPLE[0], "portrait, studio light", store=store_dir, models=pack_dir,
                                out_dir=tmp_path / "run", steps=2, seed=7, num_images=2, best_of=3)
    assert isinstance(result, castkeep.RunResult)
    summary = json.loads(result.summary_path.read_text())
    assert summary["character"]["name"] == PEOPLE[0] and summary["character"]["source"] == "store"
    assert [a["seed"] for a in summary["attempts"]] == [7, 8, 9] and len(result.kept) == 2
    # device/dtype were given once, to from_pretrained; id_scale once, to the run.
    settings = summary["settings"]
    assert settings["requested_device"] == "cpu" and settings["device"] == "cpu" and settings["dtype"] == "float32"
    assert settings["id_scale"] == 0.8 and generator.device == "cpu"
    # The adapter was conditioned on the buffalo_l vector; the store's own pack and dlib scored the outputs.
    assert summary["character"]["fingerprint"].startswith("buffalo_l:w600k_r50.onnx:")
    assert summary["models"]["conditioning"]["declared_by"] == "file name"
    assert summary["models"]["face_analyzer"].startswith("buffalo_s_lite:")
    assert summary["scoring"]["scorer"] == "fused" and summary["scoring"]["domain"] == "generated"
    for attempt in result.kept:
        assert (result.out_dir / attempt.file).is_file()
        assert (result.out_dir / attempt.file).with_suffix(".json").is_file()


@pytest.mark.generation
@pytest.mark.slow
def test_one_loaded_generator_serves_many_configs(generator, pack_dir, tmp_path):
    def run(label: str, vector: np.ndarray, **settings):
        identity = castkeep.Identity("Ada", vector)
        return pixels(generator.generate(identity, "a face", models=pack_dir, out_dir=tmp_path / label,
                                         steps=2, seed=11, **settings))[0]

    first, again = run("a", unit(0)), run("b", unit(0))
    assert np.array_equal(first, again)  # same pipeline, same seed, same identity: same pixels
    assert not np.array_equal(first, run("c", unit(1)))  # the identity conditions the image
    # id_scale is a per-run setting the loaded pipeline honours: at 0 the identity no longer matters.
    off_a, off_b = run("d", unit(0), id_scale=0.0), run("e", unit(1), id_scale=0.0)
    assert np.array_equal(off_a, off_b) and not np.array_equal(off_a, first)
    assert np.array_equal(run("f", unit(0)), first)  # and the next run is back at the default 0.8
    config = castkeep.GenerationConfig("a face", steps=2, seed=11)
    via_config = generator.generate(castkeep.Identity("Ada", unit(0)), config=config, models=pack_dir,
                                    out_dir=tmp_path / "g")
    assert np.array_equal(pixels(via_config)[0], first)
    assert via_config.summary["character"]["source"] == "vector"
    with pytest.raises(TypeError, match="not both"):
        generator.generate("Ada", "a face", config=config)


@pytest.mark.generation
@pytest.mark.slow
def test_scoring_models_must_match_the_character(generator, pack_dir, tmp_path):
    stranger = castkeep.Identity("Ada", unit(0), fingerprint="buffalo_l:w600k_r50.onnx:0123456789abcdef")
    with pytest.raises(StoreError, match="stored with face model"):
        generator.generate(stranger, "a face", models=pack_dir, out_dir=tmp_path / "x", steps=2)
    # A vector from another space than the adapter's is refused before anything runs.
    wrong_space = castkeep.Identity("Ada", unit(0), fingerprint="buffalo_s_lite:w600k_mbf.onnx:0123456789abcdef")
    with pytest.raises(UnknownSpaceError, match="conditions on buffalo_l"):
        generator.generate(wrong_space, "a face", models=pack_dir, out_dir=tmp_path / "x", steps=2)
    assert not (tmp_path / "x").exists()


@pytest.mark.generation
@pytest.mark.slow
def test_one_call_generate(tiny, store_dir, pack_dir, tmp_path, caplog):
    pipeline, adapter = tiny
    # An unknown name fails before any diffusion weights are looked for (this base model does not exist).
    with pytest.raises(UnknownCharacterError):
        castkeep.generate("Nobody", "a face", base_model="castkeep-test/not-cached", ip_adapter=adapter,
                          store=store_dir, models=pack_dir, out_dir=tmp_path / "none")
    caplog.set_level("INFO", logger="castkeep.generation")
    result = castkeep.generate(PEOPLE[1], "a face", base_model=pipeline, ip_adapter=adapter, device="cpu",
                               store=store_dir, models=pack_dir, out_dir=tmp_path / "one", steps=2, seed=5)
    assert result.summary["character"]["name"] == PEOPLE[1] and [a.seed for a in result.kept] == [5]
    assert any(record.getMessage().startswith("loading ") for record in caplog.records)
    assert not (tmp_path / "none").exists()
