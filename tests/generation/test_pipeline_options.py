"""generate's pipeline options on the edit commands and `castkeep storyboard` (issue 9): --lora-scale reaches the
FaceID LoRA's peft weights in an edit and in a storyboard shot (a plan field), --vae / --vae-tiling / --offload
load and are recorded, an offload on the CPU is one line before any model loads, the Ray workers' loader takes
them too; edit sidecars validate against schemas/edit.schema.json (and damaged ones do not); `castkeep inspect`
reads an edit's sidecar. Tiny random pipelines, a real store and real face models on a real photo."""

from __future__ import annotations

import copy
import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

# A full score record, as the generation sidecar holds it (tests/generation is on sys.path).
from test_metadata import SCORE

from castkeep.generation.metadata import edit_sidecar_errors, read_png_text
from castkeep.identity.store import Store

PERSON = "Abdullah_Gul"
pytestmark = pytest.mark.generation


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, faces_dir, fast_analyzer, buffalo_l_pack) -> Path:
    """PERSON registered with buffalo_s_lite and embedded in buffalo_l's space (the tiny adapter's, by name)."""
    folder = tmp_path_factory.mktemp("store")
    with Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        store.register(PERSON, sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[:3])
        store.reembed(PERSON, models=buffalo_l_pack)
    return folder


@pytest.fixture
def photo(faces_dir, tmp_path) -> Path:
    """A copy of a real photo (the shared ones are never written near)."""
    target = tmp_path / "in" / "gul.jpg"
    target.parent.mkdir()
    shutil.copy(sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[4], target)
    return target


def lora_scalings(unet) -> set[float]:
    """The weights peft applies to the FaceID LoRA's layers."""
    from peft.tuners.lora import LoraLayer

    return {scale for module in unet.modules() if isinstance(module, LoraLayer) for scale in module.scaling.values()}


def weights(tiny_models, *extra: str) -> tuple[str, ...]:
    return ("--base-model", str(tiny_models["pipeline"]), "--ip-adapter", str(tiny_models["faceid"]),
            "--device", "cpu", "--no-watermark", *extra)


def run_json(invoke, *args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------------- the shared options
def test_generate_edits_and_storyboard_share_one_definition_of_each_option():
    """Each load-time and Plus option of generate, storyboard and the edit commands is cli/common.py's own
    (help text, flags, choices, default): a command declaring a copy of its own, or dropping one, fails.
    Kills: a copy drifting from the shared definition (generate had its own until issue 9's follow-up)."""
    import click

    from castkeep.cli import common
    from castkeep.cli.edits import edit, fix_face, outpaint, upscale
    from castkeep.cli.generate import generate
    from castkeep.cli.storyboard import storyboard

    def described(param: click.Parameter) -> tuple:
        return (getattr(param, "help", None), param.opts, param.secondary_opts, param.default, str(param.type),
                getattr(param, "show_default", None), param.metavar)

    def shared(option) -> click.Parameter:
        @option
        def command(**_: object) -> None:
            pass

        (param,) = click.command()(command).params
        return param

    edits = (fix_face, edit, outpaint, upscale)
    every = (generate, storyboard, *edits)
    options = {"base_config": (common.base_config_option, every), "vae": (common.vae_option, every),
               "offload": (common.offload_option, every), "vae_tiling": (common.vae_tiling_option, every),
               "vae_slicing": (common.vae_slicing_option, (generate, storyboard)),
               "lora_scale": (common.lora_scale_option, (generate, *edits)),
               "image_encoder": (common.image_encoder_option, every),
               "plus_version": (common.plus_version_option, every),
               "s_scale": (common.s_scale_option, (generate, *edits))}  # a plan field in storyboards
    for name, (option, commands) in options.items():
        expected = described(shared(option))
        for command in commands:
            (param,) = [p for p in command.params if p.name == name]
            assert described(param) == expected, (command.name, name)
    # generate's help texts are the ones it had before the options moved to cli/common.py.
    helps = {p.name: getattr(p, "help", None) for p in generate.params}  # click < 8.3 Arguments have no help
    assert helps["s_scale"] == ("FaceID Plus v2: weight of the face-crop (CLIP) tokens added to the identity tokens "
                                "(shortcut).")
    assert helps["offload"].startswith("Small GPUs: keep weights in CPU RAM")


# ---------------------------------------------------------------------------------- edits
@pytest.mark.slow
def test_lora_scale_reaches_the_adapter_weights_in_an_edit(loaded, store_dir, photo, tmp_path):
    """fix-face on a loaded Generator: after the repaint peft applies 0.5 to every FaceID LoRA layer (and
    the VAE tiles); the sidecar records it and its A1111 parameters say it. Kills: an edit ignoring
    lora_scale or vae_tiling."""
    from castkeep.generation.edits import fix_face
    from castkeep.generation.generator import Generator
    from castkeep.generation.provenance.output import Provenance

    generator = Generator(loaded)
    out = tmp_path / "fixed.png"
    result = fix_face(photo, PERSON, generator=generator, store=store_dir, out=out, steps=3, seed=1,
                      keep="always", lora_scale=0.5, vae_tiling=True, provenance=Provenance(watermark=False))
    assert lora_scalings(loaded.pipe.unet) == {0.5} and loaded.pipe.vae.use_tiling
    assert result.report["settings"]["lora_scale"] == 0.5 and result.report["settings"]["offload"] == "none"
    assert "FaceID LoRA weight: 0.5" in read_png_text(out)["parameters"]
    assert edit_sidecar_errors(json.loads(out.with_suffix(".json").read_text())) == []
    fix_face(photo, PERSON, generator=generator, store=store_dir, out=tmp_path / "again.png", steps=3, seed=1,
             lora_scale=1.0, provenance=Provenance(watermark=False))
    # Per run, not left over from the last one: LoRA at 1, and no tiling at the model's own size (auto).
    assert lora_scalings(loaded.pipe.unet) == {1.0} and not loaded.pipe.vae.use_tiling


@pytest.mark.slow
def test_edit_cli_loads_and_records_the_options_and_inspect_reads_the_edit(invoke, tiny_models, store_dir, photo,
                                                                           tmp_path):
    """`edit --lora-scale 0.5 --vae DIR --vae-tiling`: the sidecar (valid against the edit schema) records
    them, and `inspect` shows the command, the face before -> after, the mask and the models, in text and
    JSON. Kills: an option parsed but not passed on; inspect not reading edit sidecars."""
    out = tmp_path / "hair.png"
    vae = tiny_models["pipeline"] / "vae"
    report = run_json(invoke, "edit", str(photo), "short grey hair", "--character", PERSON, "--mask", "hair",
                      "--steps", "2", "--store", str(store_dir), "--out", str(out),
                      *weights(tiny_models, "--lora-scale", "0.5", "--vae", str(vae), "--vae-tiling"))
    settings = report["settings"]
    assert (settings["lora_scale"], settings["vae_tiling"], settings["offload"]) == (0.5, True, "none")
    assert settings["requested_device"] == "cpu" and report["models"]["vae"] == str(vae)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert edit_sidecar_errors(sidecar) == [] and sidecar["schema"] == "castkeep.edit.sidecar/2"

    inspected = run_json(invoke, "inspect", str(out))["edit"]
    assert inspected["command"] == "edit" and inspected["mask"] == "hair" and inspected["schema_errors"] == []
    (face,) = inspected["faces"]
    assert face["character"] == PERSON and face["before"] == report["face"]["before"]
    assert face["after"] == report["face"]["after"] and inspected["models"]["vae"] == str(vae)
    assert inspected["settings"]["lora_scale"] == 0.5
    text = invoke("inspect", str(out)).stdout
    probability = report["face"]["before"]["probability"]
    assert f"edit: edit of {photo} (valid sidecar)" in text
    assert f"face as {PERSON}: P(same) {probability:.3f} -> " in text and "mask: hair (" in text
    assert f"vae {vae}" in text and "lora_scale 0.5" in text


@pytest.mark.slow
def test_offload_on_the_cpu_is_one_line_before_any_model_loads(invoke, tiny_models, store_dir, photo, tmp_path):
    """--offload with --device cpu: exit 14 (ConfigError), one line, before the face or diffusion models
    load (the weights given do not exist). Kills: a silent offload, or a crash (exit 70)."""
    missing = ("--base-model", str(tmp_path / "no-model"), "--ip-adapter", str(tmp_path / "no-adapter.bin"))
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[shots]]\nprompt = "portrait"\ncharacters = ["{PERSON}"]\n', encoding="utf-8")
    for args in (("fix-face", str(photo), "--character", PERSON, "--out", str(tmp_path / "o.png")),
                 ("upscale", str(photo), "--character", PERSON, "--out", str(tmp_path / "u.png")),
                 ("storyboard", str(plan), "--out", str(tmp_path / "run"))):
        for mode in ("model", "sequential"):
            result = invoke(*args, "--store", str(store_dir), *missing, "--device", "cpu", "--offload", mode)
            assert result.returncode == 14, (args[0], result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: --offload {mode} moves weights"), lines
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_offload_with_auto_on_a_machine_without_gpu_is_refused_at_load(invoke, tiny_models, store_dir, photo,
                                                                        tmp_path):
    """--device auto resolves to the CPU here (tests never need a GPU): the offload is refused when the
    weights load, still one line, exit 14."""
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("auto resolves to a GPU here")
    result = invoke("fix-face", str(photo), "--character", PERSON, "--store", str(store_dir), "--out",
                    str(tmp_path / "o.png"), "--base-model", str(tiny_models["pipeline"]), "--ip-adapter",
                    str(tiny_models["faceid"]), "--offload", "model", "--json")  # --json: no "loading" note
    assert result.returncode == 14 and "--offload model moves weights" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()


# ---------------------------------------------------------------------------------- the edit schema
def test_lanczos_upscale_sidecar_and_inspect_need_no_model(invoke, photo, tmp_path):
    out = tmp_path / "2k.png"
    run_json(invoke, "upscale", str(photo), "--to", "512", "--mode", "lanczos", "--no-watermark", "--out", str(out))
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert edit_sidecar_errors(sidecar) == []
    inspected = run_json(invoke, "inspect", str(out))
    assert inspected["castkeep"] == sidecar  # the chunk is the sidecar
    edit = inspected["edit"]
    assert (edit["command"], edit["faces"], edit["mask"], edit["schema_errors"]) == ("upscale", [], None, [])
    assert edit["settings"] == {"mode": "lanczos", "to": "512"}


def test_a_generation_image_has_no_edit_section(invoke, tmp_path, faces_dir):
    """Kills: inspect reading every castkeep chunk as an edit."""
    from castkeep.generation.provenance.inspection import edit_summary

    assert edit_summary({"schema": "castkeep.generation.sidecar/3", "faces": []}) is None
    assert edit_summary({"error": "unreadable castkeep chunk"}) is None and edit_summary(None) is None
    photo = tmp_path / "plain.jpg"
    shutil.copy(sorted((faces_dir / "lfw_gallery" / PERSON).glob("*.jpg"))[0], photo)
    assert run_json(invoke, "inspect", str(photo))["edit"] is None


EDIT_SIDECAR = {
    "schema": "castkeep.edit.sidecar/2", "castkeep_version": "0.1.0", "command": "fix-face", "image": "out.png",
    "width": 250, "height": 250, "source": {"file": "in/gul.jpg", "sha256": "c" * 64},
    "prompt": "a detailed photo of a face", "negative_prompt": "", "seed": 3,
    "settings": {"seed": 3, "steps": 4, "guidance": 7.5, "id_scale": 0.8, "lora_scale": 0.5, "scheduler": "default",
                 "sampler": "PNDMScheduler", "scorer": "fused", "strength": 0.4, "margin": 0.35, "keep": "always",
                 "vae_tiling": None, "vae_slicing": None, "device": "cpu", "requested_device": "cpu",
                 "dtype": "float32", "offload": "none"},
    "models": {"face_analyzer": "buffalo_s:w600k_mbf.onnx:4567", "base_model": "tiny", "base_model_kind": "sd15",
               "base_model_hash": "a" * 64, "ip_adapter": "adapters", "ip_adapter_file": "ip-adapter-faceid_sd15.bin",
               "ip_adapter_hash": "b" * 64, "ip_adapter_variant": "faceid", "faceid_lora": True, "vae": None,
               "conditioning": [{"pack": "buffalo_l", "recogniser": "w600k_r50.onnx", "declared_by": "file name",
                                 "fingerprint": "buffalo_l:w600k_r50.onnx:0123"}]},
    "characters": [{"name": PERSON, "fingerprint": "buffalo_l:w600k_r50.onnx:0123", "source": "store",
                    "vector_sha256": "0123456789abcdef"}],
    "faces": [{"face": 0, "character": PERSON,
               "before": {"face_found": True, "probability": 0.8, "same": True, "scorer": "fused", "cosine": 0.5},
               "after": {"face_found": True, "probability": 0.9, "same": True, "scorer": "fused", "cosine": 0.6},
               "improved": True, "kept": True, "mask": {"pixels": 900, "fraction": 0.0144},
               "region": {"box": [10, 10, 120, 140], "model_size": [448, 576]},
               "scores": {"before": SCORE, "after": SCORE}}],
    "changed": True, "mask_file": "out.mask.png", "warnings": [], "created_at": "2026-11-24T16:53:09+00:00",
    "provenance": {"watermark": None, "c2pa": None},
}


def damaged(path: str, value: object) -> dict:
    data = copy.deepcopy(EDIT_SIDECAR)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return data


@pytest.mark.parametrize("path, value, where", [
    ("schema", "castkeep.edit.sidecar/1", "$.schema"),  # before settings recorded offload
    ("command", "generate", "$.command"),
    ("settings.offload", ..., "$.settings"),
    ("settings.offload", "disk", "$.settings"),
    ("settings.lora_scale", 3, "$.settings"),
    ("settings.device", "auto", "$.settings"),
    ("faces", ..., "$"),  # fix-face without its faces
    ("faces.0.after.probability", 1.5, "$.faces[0].after.probability"),
    ("mask_file", "out.png", "$.mask_file"),
    ("models.ip_adapter_hash", ..., "$.models"),  # weights named without their hash
    ("source.sha256", "abc", "$.source.sha256"),
    ("provenance", ..., "$"),
    ("created_at", "yesterday", "$.created_at"),
])
def test_a_damaged_edit_sidecar_fails_the_schema(path, value, where):
    """Each damage is found, at its place. Kills: a schema that accepts anything."""
    errors = edit_sidecar_errors(damaged(path, value))
    assert errors and any(error.startswith(where) for error in errors), errors


def test_the_example_edit_sidecar_is_valid():
    assert edit_sidecar_errors(EDIT_SIDECAR) == []


# ---------------------------------------------------------------------------------- storyboard
def one_shot_plan(tmp_path: Path, extra: str = "") -> Path:
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""
[defaults]
width = 64
height = 64
steps = 2
[[shots]]
id = "s1"
prompt = "{PERSON} at a desk"
characters = ["{PERSON}"]
{extra}
""", encoding="utf-8")
    return plan


@pytest.mark.slow
def test_a_shots_lora_scale_reaches_the_adapter_weights(loaded, tiny_models, store_dir, tmp_path):
    """Kills: the plan field parsed but not passed to the shot's config."""
    from castkeep.generation.generator import Generator
    from castkeep.generation.provenance.output import Provenance
    from castkeep.generation.storyboard.runner import run_storyboard

    result = run_storyboard(one_shot_plan(tmp_path, "lora_scale = 0.5"), out_dir=tmp_path / "run", store=store_dir,
                            base_model=tiny_models["pipeline"], ip_adapter=tiny_models["faceid"],
                            generator=Generator(loaded), provenance=Provenance(watermark=False))
    assert lora_scalings(loaded.pipe.unet) == {0.5}
    (take,) = sorted((result.run_dir / "attempts").rglob("*.json"))
    sidecar = json.loads(take.read_text())
    assert sidecar["settings"]["lora_scale"] == 0.5
    assert "FaceID LoRA weight: 0.5" in read_png_text(take.with_suffix(".png"))["parameters"]


def test_lora_scale_in_a_plan_is_checked():
    from castkeep.errors import PlanError
    from castkeep.generation.storyboard.plan import parse_plan

    shots = [{"prompt": "x", "characters": ["A"], "lora-scale": 0.6}]
    assert parse_plan({"shots": shots}).shots[0].settings["lora_scale"] == 0.6
    assert "lora_scale" not in parse_plan({"shots": [{"prompt": "x", "characters": ["A"]}]}).shots[0].settings
    with pytest.raises(PlanError, match=r"shot 1 \(shot-001\): lora_scale: must be a number between 0 and 2"):
        parse_plan({"shots": [{"prompt": "x", "characters": ["A"], "lora_scale": 2.5}]})
    with pytest.raises(PlanError, match="defaults: lora_scale"):
        parse_plan({"defaults": {"lora_scale": "high"}, "shots": [{"prompt": "x", "characters": ["A"]}]})


@pytest.mark.slow
def test_storyboard_cli_loads_the_vae_and_records_the_memory_options(invoke, tiny_models, store_dir, tmp_path):
    """--vae, --vae-tiling, --no-vae-slicing on a storyboard: the take's sidecar records them and the VAE
    (part of the models, so of each shot's key). Kills: the CLI not passing them to run_storyboard."""
    vae = tiny_models["pipeline"] / "vae"
    out = tmp_path / "run"
    result = invoke("storyboard", str(one_shot_plan(tmp_path)), "--out", str(out), "--store", str(store_dir),
                    *weights(tiny_models, "--vae", str(vae), "--vae-tiling", "--no-vae-slicing"), "--json")
    assert result.returncode == 0, result.stderr
    (take,) = sorted((out / "attempts").rglob("*.json"))
    sidecar = json.loads(take.read_text())
    assert sidecar["models"]["vae"] == str(vae)
    settings = sidecar["settings"]
    assert (settings["vae_tiling"], settings["vae_slicing"], settings["offload"]) == (True, False, "none")


@pytest.mark.slow
def test_the_ray_workers_loader_takes_the_load_time_options(tiny_models, store_dir):
    """What each Ray actor runs (ShotWorker.load from the driver's WorkerSpec): the VAE loads, an offload on
    the CPU is refused. Kills: WorkerSpec fields not reaching Generator.from_pretrained."""
    from castkeep.errors import ConfigError
    from castkeep.generation.runner import identity_from_store
    from castkeep.generation.storyboard.worker import ShotWorker, WorkerSpec

    with Store.open(store_dir, create=False) as store:
        identity = identity_from_store(store, PERSON)
    vae = str(tiny_models["pipeline"] / "vae")
    spec = WorkerSpec(base_model=str(tiny_models["pipeline"]), ip_adapter=str(tiny_models["faceid"]), device="cpu",
                      dtype="auto", models=None, store=str(store_dir), identities={PERSON: identity},
                      judges=("fused",), vae=vae)
    with ExitStack() as stack:
        worker = ShotWorker.load(spec, stack, label="test")
        assert worker.info.models["vae"] == vae and worker.loaded.vae == vae
    from dataclasses import replace

    with ExitStack() as stack, pytest.raises(ConfigError, match="--offload model moves weights"):
        ShotWorker.load(replace(spec, offload="model"), stack, label="test")


# ---------------------------------------------------------------------------------- scorers beside a GPU
GPU_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")  # onnxruntime: it has none here
def test_scorers_run_on_the_pipelines_gpu_and_on_the_cpu_by_default(loaded, tiny_models, store_dir, monkeypatch):
    """The providers the scoring models ask for, chosen on a machine without a GPU: the CPU beside a CPU
    pipeline; the pack's CUDA providers beside a CUDA pipeline when onnxruntime has them (made to say so
    here: nothing runs on them), and the CPU, not an error, when it has not. Kills: scorers pinned to the
    CPU, or asking for CUDA beside a CPU pipeline."""
    from dataclasses import replace

    import onnxruntime
    import torch

    from castkeep.generation.config import GenerationConfig
    from castkeep.generation.edits.session import edit_session
    from castkeep.generation.generator import Generator, scoring_device

    assert [scoring_device(d) for d in ("cpu", "mps", "cuda")] == ["cpu", "cpu", "auto"]
    assert scoring_device("auto") == ("auto" if torch.cuda.is_available() else "cpu")
    cpu = Generator(loaded)
    assert cpu.scoring_analyzer().pack.providers == ["CPUExecutionProvider"]
    assert cpu.recogniser().requested_providers == ["CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(GPU_PROVIDERS))
    on_cuda = Generator(replace(loaded, device="cuda"))
    assert on_cuda.scoring_analyzer().pack.providers == GPU_PROVIDERS
    assert on_cuda.recogniser().requested_providers == GPU_PROVIDERS
    assert Generator(loaded).scoring_analyzer().pack.providers == ["CPUExecutionProvider"]  # CPU pipeline: CPU
    config = GenerationConfig("portrait", scorer="fused")
    weights = {"base_model": tiny_models["pipeline"], "ip_adapter": tiny_models["faceid"], "store": store_dir}
    with edit_session([PERSON], config, device="cuda", **weights) as session:  # checks only: nothing loads on it
        assert session.analyzer.pack.providers == GPU_PROVIDERS
        assert session.cast[0].scorer.recogniser.requested_providers == GPU_PROVIDERS
    with edit_session([PERSON], config, device="cpu", **weights) as session:
        assert session.analyzer.pack.providers == ["CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert Generator(replace(loaded, device="cuda")).scoring_analyzer().pack.providers == ["CPUExecutionProvider"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_ray_worker_loads_the_vae_the_driver_was_given(invoke, tiny_models, store_dir, tmp_path):
    """One Ray worker on a local cluster: the take it made records the --vae and the memory options.
    Kills: run_storyboard not putting the load-time options into the WorkerSpec."""
    from test_storyboard_ray import ray_processes

    ray = pytest.importorskip("ray")
    before = ray_processes()
    vae = tiny_models["pipeline"] / "vae"
    out = tmp_path / "run"
    result = invoke("storyboard", str(one_shot_plan(tmp_path)), "--out", str(out), "--store", str(store_dir),
                    *weights(tiny_models, "--vae", str(vae), "--vae-tiling"), "--ray", "auto", "--workers", "1",
                    "--json")
    assert result.returncode == 0, result.stderr
    assert not ray.is_initialized()
    (take,) = sorted((out / "attempts").rglob("*.json"))
    sidecar = json.loads(take.read_text())
    assert sidecar["models"]["vae"] == str(vae) and sidecar["settings"]["vae_tiling"] is True
    deadline = time.monotonic() + 30
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes() - before


def test_a_face_not_found_again_where_it_was_is_a_valid_edit_result():
    """fix-face re-scores each face where it was: none there any more, in an image that still holds faces
    (the generation sidecar's `score` requires faces 0 without a face; an edit's must not)."""
    data = copy.deepcopy(EDIT_SIDECAR)
    data["faces"][0]["scores"]["after"] = {**SCORE, "face_found": False, "faces": 2, "cosine": None,
                                           "probability": None, "same": None}
    assert edit_sidecar_errors(data) == []
    data["faces"][0]["scores"]["after"]["scores"] = {"fused": {"probability": 0.5}}  # a verdict is still checked
    assert edit_sidecar_errors(data)
