"""A storyboard's files written by its background writer (generation/background_writer.py), on the tiny
pipeline at 256x256, the smallest size that carries the watermark: every take and kept image carries it
(read back by `inspect`), a take marked by the worker (as a Ray worker marks it) is the same file as one
marked by the writer, and a write that fails ends the run with a clear error (exit 12, never 70) and no
shot recorded done without its files; the same command then resumes the run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

# The characters and the CLI helpers are test_storyboard.py's (tests/generation is on sys.path).
import test_storyboard as story
from test_storyboard import PEOPLE, arguments, invoke_cli, pixels

cast_store = story.cast_store  # its module fixture, run again for this module

pytestmark = [pytest.mark.generation, pytest.mark.slow]

PLAN_256 = f"""
title = "Marked series"
seed = 11
[defaults]
width = 256
height = 256
steps = 2
[[shots]]
id = "m1"
prompt = "{PEOPLE[0]} at a desk"
characters = ["{PEOPLE[0]}"]
[[shots]]
id = "m2"
prompt = "{PEOPLE[1]} in the rain"
characters = ["{PEOPLE[1]}"]
best_of = 2
[[shots]]
id = "m3"
prompt = "{PEOPLE[0]} waving"
characters = ["{PEOPLE[0]}"]
"""


@pytest.fixture(scope="module")
def tiny_256(tiny_models, tmp_path_factory) -> Path:
    """The tiny pipeline with a 128-latent UNet: 256x256 outputs (the FaceID checkpoint fits it unchanged)."""
    from tiny_pipelines import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    pipe.unet.register_to_config(sample_size=128)
    folder = tmp_path_factory.mktemp("tiny-256") / "tiny-sd15-256"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def plan_256(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan-256") / "marked.toml"
    path.write_text(PLAN_256, encoding="utf-8")
    return path


def run_256(plan: Path, out: Path, tiny_256: Path, tiny_models, store: Path, *extra: str):
    models = {**tiny_models, "pipeline": tiny_256}
    return invoke_cli(*arguments(plan, out, models, store), "--json", *extra)


def ledger_states(run: Path) -> dict[str, str]:
    with sqlite3.connect(run / "ledger.sqlite3") as db:
        return dict(db.execute("SELECT id, state FROM shots"))


def recorded_files(run: Path) -> list[str]:
    with sqlite3.connect(run / "ledger.sqlite3") as db:
        return [file for file, in db.execute("SELECT file FROM attempts")]


@pytest.fixture(scope="module")
def marked_run(tmp_path_factory, plan_256, tiny_256, tiny_models, cast_store) -> Path:
    out = tmp_path_factory.mktemp("marked") / "run"
    result = run_256(plan_256, out, tiny_256, tiny_models, cast_store)
    assert result.returncode == 0, result.stderr
    return out


def test_every_take_and_kept_image_carries_the_watermark(marked_run):
    from castkeep.generation.provenance.inspection import inspect_image

    files = sorted((marked_run / "attempts").rglob("*.png")) + sorted((marked_run / "shots").glob("*.png"))
    assert len(files) == 4 + 3
    for path in files:
        reading = inspect_image(path)
        assert reading["watermark"]["status"] == "found", path
        assert reading["castkeep"]["provenance"]["watermark"]["applied"] is True
    assert ledger_states(marked_run) == {"m1": "done", "m2": "done", "m3": "done"}
    # The writer's own time is kept apart from what held the pipeline up.
    summary = json.loads((marked_run / "summary.json").read_text())
    split = summary["shots"][1]["timing"]["split"]
    assert split["images"] == 2 and split["background_s"] > 0


def test_takes_marked_by_the_worker_are_the_writers_files(tmp_path, monkeypatch, marked_run, plan_256, tiny_256,
                                                           tiny_models, cast_store):
    """A Ray worker marks its own takes (Storyboard.mark_on_workers); in this process the same code path
    gives the same pixels and the same sidecars as the driver's writer marking them."""
    from castkeep.generation.storyboard import board as board_module

    original = board_module.Storyboard.__init__

    def marking_on_workers(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "mark_on_workers": True})

    monkeypatch.setattr(board_module.Storyboard, "__init__", marking_on_workers)
    out = tmp_path / "run"
    result = run_256(plan_256, out, tiny_256, tiny_models, cast_store)
    assert result.returncode == 0, result.stderr
    names = sorted(str(path.relative_to(marked_run)) for path in marked_run.glob("*/**/*.png"))
    assert names == sorted(str(path.relative_to(out)) for path in out.glob("*/**/*.png")) and len(names) == 7
    for name in names:
        assert np.array_equal(pixels(out / name), pixels(marked_run / name)), name
        sidecar = json.loads((out / name).with_suffix(".json").read_text())
        assert sidecar["provenance"] == json.loads((marked_run / name).with_suffix(".json").read_text())["provenance"]


def test_a_failed_write_ends_the_run_clearly_and_the_same_command_resumes(tmp_path, monkeypatch, marked_run, plan_256,
                                                                         tiny_256, tiny_models, cast_store):
    from castkeep.generation.provenance.inspection import inspect_image
    from castkeep.generation.provenance.output import Provenance

    original = Provenance.save_png
    saved: list[str] = []

    def save_then_fill_the_disk(self, image, path, parameters, sidecar):
        if len(saved) == 2:  # the third file: m2's second take
            raise OSError(28, "No space left on device")
        saved.append(path.name)
        return original(self, image, path, parameters, sidecar)

    monkeypatch.setattr(Provenance, "save_png", save_then_fill_the_disk)
    out = tmp_path / "run"
    failed = run_256(plan_256, out, tiny_256, tiny_models, cast_store)
    assert failed.returncode == 12, failed.stderr
    assert "shot 2 (m2): cannot write take 2" in failed.stderr and "No space left on device" in failed.stderr
    # m1 is done with its files; m2 is not (its first take is recorded, the second not); the error may
    # surface while m3 runs (the pipeline does not wait for the writer), m3 is not done either.
    states = ledger_states(out)
    assert states["m1"] == "done" and states["m2"] == "running" and states.get("m3", "running") == "running"
    recorded = recorded_files(out)
    assert [Path(file).parent.name for file in recorded[:2]] == ["m1", "m2"] and len(recorded) <= 3
    assert not any("m2_try01" in file for file in recorded) and all((out / file).is_file() for file in recorded)
    assert not (out / "shots" / "m2.png").exists() and not (out / "summary.json").exists()

    monkeypatch.setattr(Provenance, "save_png", original)
    resumed = run_256(plan_256, out, tiny_256, tiny_models, cast_store)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["images_generated"] == 4 - len(recorded)  # m2's second take (and m3's)
    for path in sorted(out.glob("*/**/*.png")):
        assert inspect_image(path)["watermark"]["status"] == "found", path
        assert np.array_equal(pixels(path), pixels(marked_run / path.relative_to(out))), path
