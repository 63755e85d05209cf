"""`castkeep storyboard` on the tiny SD1.5 pipeline with a real store of two characters: a 6-shot plan runs,
a run killed with SIGKILL resumes without regenerating finished shots and ends with the same pixels as an
uninterrupted run, damaged files are made again, --retry-failed adds seeds, a changed shot is regenerated
alone, and bad plans or unknown characters stop before any model loads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.generation.metadata import storyboard_summary_errors
from castkeep.identity.store import Store

pytestmark = [pytest.mark.generation, pytest.mark.slow]

PEOPLE = ("Abdullah_Gul", "Adrien_Brody")
PLAN = f"""
title = "Tiny series"
seed = 5
[defaults]
negative = "blurry"
width = 64
height = 64
steps = 2
id_scale = 0.6
[[shots]]
id = "s1"
prompt = "{PEOPLE[0]} at a desk"
characters = ["{PEOPLE[0]}"]
[[shots]]
id = "s2"
prompt = "{PEOPLE[1]} in the rain"
characters = ["{PEOPLE[1]}"]
best_of = 2
[[shots]]
id = "s3"
prompt = "both of them talking"
characters = ["{PEOPLE[0]}", "{PEOPLE[1]}"]
regions = {{ {PEOPLE[0]} = "left", {PEOPLE[1]} = "right" }}
[[shots]]
id = "s4"
prompt = "{PEOPLE[0]} running"
characters = ["{PEOPLE[0]}"]
min_score = 0.9
max_tries = 3
[[shots]]
id = "s5"
prompt = "{PEOPLE[1]} close-up"
characters = ["{PEOPLE[1]}"]
best_of = 3
scheduler = "euler"
[[shots]]
id = "s6"
prompt = "{PEOPLE[0]} waving"
characters = ["{PEOPLE[0]}"]
best_of = 2
"""


@pytest.fixture(scope="module")
def cast_store(tmp_path_factory, faces_dir, fast_analyzer, buffalo_l_pack) -> Path:
    """Both people registered with buffalo_s_lite and embedded in buffalo_l's space (the adapter's)."""
    folder = tmp_path_factory.mktemp("cast")
    with Store.open(folder, analyzer=fast_analyzer, create=True) as store:
        for person in PEOPLE:
            store.register(person, sorted((faces_dir / "lfw_gallery" / person).glob("*.jpg"))[:3])
            store.reembed(person, models=buffalo_l_pack)
    return folder


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "series.toml"
    path.write_text(PLAN, encoding="utf-8")
    return path


def invoke_cli(*args: str):
    """`castkeep ARGS` through the console entry point, in this process (as the `invoke` fixture does; a
    module-scoped fixture cannot take that one)."""
    from click.testing import CliRunner

    from castkeep.cli.main import main

    class Result:
        pass

    result = Result()
    with CliRunner().isolation() as (stdout, stderr, _):
        try:
            main(list(args))
            result.returncode = 0
        except SystemExit as exc:
            result.returncode = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        result.stdout, result.stderr = stdout.getvalue().decode(), stderr.getvalue().decode()
    return result


def arguments(plan: Path, out: Path, tiny_models, store: Path) -> list[str]:
    return ["storyboard", str(plan), "--out", str(out), "--base-model", str(tiny_models["pipeline"]),
            "--ip-adapter", str(tiny_models["faceid"]), "--store", str(store), "--device", "cpu"]


def sessions(run: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(run / "ledger.sqlite3") as db:
        return db.execute("SELECT id, pipeline_calls, images FROM sessions ORDER BY id").fetchall()


def attempt_sessions(run: Path) -> dict[tuple[str, int], int]:
    with sqlite3.connect(run / "ledger.sqlite3") as db:
        return {(shot, attempt): session for shot, attempt, session in
                db.execute("SELECT shot, attempt, session FROM attempts")}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def kept_pixels(run: Path) -> dict[str, np.ndarray]:
    return {path.name: pixels(path) for path in sorted((run / "shots").glob("*.png"))}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, plan_file, tiny_models, cast_store) -> Path:
    """The plan run once, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = invoke_cli(*arguments(plan_file, out, tiny_models, cast_store), "--json")
    assert result.returncode == 0, result.stderr
    return out


def test_a_six_shot_two_character_plan_runs(reference_run):
    summary = json.loads((reference_run / "summary.json").read_text())
    assert storyboard_summary_errors(summary) == []  # s4 below target, s3 a two-character cast
    assert [shot["id"] for shot in summary["shots"]] == ["s1", "s2", "s3", "s4", "s5", "s6"]
    assert summary["counts"]["unfinished"] == 0 and summary["counts"]["error"] == 0
    # Tiny-model noise has no face: every shot is flagged, s4 (min_score 0.9) missed its target in 3 takes.
    by_id = {shot["id"]: shot for shot in summary["shots"]}
    assert by_id["s4"]["state"] == "failed-target" and by_id["s4"]["attempts"] == 3
    assert [by_id[s]["attempts"] for s in ("s1", "s2", "s3", "s5", "s6")] == [1, 2, 1, 3, 2]
    assert all(shot["flags"] for shot in summary["shots"]) and len(summary["flagged"]) == 6
    assert set(by_id["s3"]["score"]["characters"]) == set(PEOPLE)
    assert by_id["s3"]["score"]["characters"][PEOPLE[0]]["region"] == "left"
    assert set(summary["table"]["probability"]) == set(PEOPLE)
    # One image per shot in shots/, every take in attempts/, each with its sidecar; the sidecar of a kept
    # image says why it was chosen, the PNG carries how it was made.
    assert sorted(p.name for p in (reference_run / "shots").glob("*.png")) == [f"s{i}.png" for i in range(1, 7)]
    assert len(list((reference_run / "attempts").rglob("*.png"))) == 12
    sidecar = json.loads((reference_run / "shots" / "s5.json").read_text())
    assert sidecar["selection"]["rank"] == 1 and len(sidecar["selection"]["attempts"]) == 3
    assert sidecar["settings"]["sampler"] == "Euler" and sidecar["seed"] == by_id["s5"]["kept"][0]["seed"]
    assert [c["name"] for c in sidecar["characters"]] == [PEOPLE[1]]
    # One pipeline call per batch: 12 images, 12 calls (batch size 1).
    assert sessions(reference_run) == [(1, 12, 12)]
    # The report stands alone: no external asset, every kept image embedded, links relative.
    report = (reference_run / "report.html").read_text()
    assert "<svg" in report and report.count("data:image/jpeg;base64,") == 6
    assert "http://" not in report.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in report
    assert "href='shots/s1.png'" in report and "Flagged shots" in report


@pytest.mark.subprocess
def test_a_run_killed_with_sigkill_resumes_with_the_same_pixels(tmp_path, reference_run, plan_file, tiny_models,
                                                               cast_store):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "castkeep", *arguments(plan_file, out, tiny_models, cast_store)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 300
    try:
        while len(list((out / "shots").glob("*.png"))) < 2:  # two shots finished: kill it mid-run
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    with sqlite3.connect(out / "ledger.sqlite3") as db:
        finished = {shot for shot, in db.execute("SELECT id FROM shots WHERE state IN ('done', 'failed-target')")}
    # The second kept PNG may be on disk with its shot not yet recorded done: killed in between, it is not counted.
    assert 1 <= len(finished) < 6
    before = attempt_sessions(out)

    resumed = invoke_cli(*arguments(plan_file, out, tiny_models, cast_store), "--json")
    assert resumed.returncode == 0, resumed.stderr
    after = attempt_sessions(out)
    # Finished shots were not generated again; every take of the killed session still counts.
    assert all(after[key] == 1 for key in before) and all(shot not in finished for shot, _ in after if after[(shot, _)] == 2)
    (_, _, first_images), (_, calls, images) = sessions(out)
    assert images == calls == sum(session == 2 for session in after.values()) == 12 - len(before)
    # Same seeds, same pixels: the resumed run's images are the uninterrupted run's.
    expected = kept_pixels(reference_run)
    got = kept_pixels(out)
    assert sorted(got) == sorted(expected)
    assert all(np.array_equal(got[name], expected[name]) for name in expected)
    summary = json.loads(resumed.stdout)
    assert summary["counts"]["unfinished"] == 0 and summary["images_generated"] == 12 - len(before)
    # The killed session never ended: its outcome is null in summary.json.
    written = json.loads((out / "summary.json").read_text())
    assert written["sessions"][0]["outcome"] is None and storyboard_summary_errors(written) == []

    # Run again: nothing left to do, no pipeline call.
    again = invoke_cli(*arguments(plan_file, out, tiny_models, cast_store), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["pipeline_calls"] == 0


def test_damaged_files_are_made_again_and_a_changed_shot_alone_is_regenerated(tmp_path, reference_run, plan_file,
                                                                             tiny_models, cast_store):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    expected = kept_pixels(reference_run)
    shots = {shot["id"]: shot for shot in json.loads((out / "summary.json").read_text())["shots"]}
    # s2: its kept file cut short; it is copied again from its take (no pipeline call).
    kept = out / "shots" / "s2.png"
    kept.write_bytes(kept.read_bytes()[:100])
    # s5: its kept file and that take gone; the take is made again with its own seed (one call).
    (out / "shots" / "s5.png").unlink()
    take = out / next(t for t in shots["s5"]["takes"] if f"_try{shots['s5']['kept'][0]['attempt']:02d}_" in t)
    take.write_bytes(b"")
    # s6: a rejected take pruned by the user; the shot is finished, nothing to do.
    rejected = next(t for t in shots["s6"]["takes"] if f"_try{shots['s6']['kept'][0]['attempt']:02d}_" not in t)
    (out / rejected).unlink()
    repaired = invoke_cli(*arguments(plan_file, out, tiny_models, cast_store), "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["pipeline_calls"] == 1 and take.stat().st_size > 0
    assert all(np.array_equal(pixels(out / "shots" / name), expected[name]) for name in expected)
    assert not (out / rejected).exists()

    # --retry-failed: s4 (below target) gets another 3 takes, seeds continuing its sequence; nothing else runs.
    retried = invoke_cli(*arguments(plan_file, out, tiny_models, cast_store), "--retry-failed", "--json")
    assert retried.returncode == 0, retried.stderr
    summary = json.loads(retried.stdout)
    s4 = next(shot for shot in summary["shots"] if shot["id"] == "s4")
    assert summary["images_generated"] == 3 and s4["attempts"] == 6 and s4["rounds"] == 2
    seeds = sorted(json.loads((out / take_file).with_suffix(".json").read_text())["seed"] for take_file in s4["takes"])
    assert seeds == list(range(seeds[0], seeds[0] + 6))

    # A shot whose prompt changed is generated again; the others are left alone.
    changed = tmp_path / "series.toml"
    changed.write_text(PLAN.replace("in the rain", "in the snow"), encoding="utf-8")
    rerun = invoke_cli(*arguments(changed, out, tiny_models, cast_store), "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["images_generated"] == 2  # s2: best_of 2
    assert not np.array_equal(pixels(out / "shots" / "s2.png"), expected["s2.png"])
    assert all(np.array_equal(pixels(out / "shots" / n), expected[n]) for n in expected if n != "s2.png")


@pytest.mark.parametrize(("text", "code", "message"), [
    ('[[shots]]\nprompt="x"\ncharacters="Abdullah_Gul"\nsteps=0\n', 21, "shot 1 (shot-001): steps: must be"),
    ('[[shots]]\nprompt="x"\ncharacters="Abdullah_Gul"\n[[shots]]\nid="p2"\nprompt="y"\ncharacters=["Nobody"]\n', 8,
     "shot 2 (p2): "),
])
def test_bad_plans_and_unknown_characters_fail_before_any_model_loads(tmp_path, cast_store, text, code, message):
    plan = tmp_path / "plan.toml"
    plan.write_text(text, encoding="utf-8")
    # The weights do not even exist: the plan and the store are checked first.
    result = invoke_cli("storyboard", str(plan), "--out", str(tmp_path / "run"), "--base-model",
                        str(tmp_path / "no-model"), "--ip-adapter", str(tmp_path / "no-adapter.bin"), "--store",
                        str(cast_store))
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr and not (tmp_path / "run").exists()


def test_the_example_plan_prints_and_parses(tmp_path):
    from castkeep.generation.storyboard.plan import load_plan

    printed = invoke_cli("storyboard", "--example")
    assert printed.returncode == 0
    path = tmp_path / "example.toml"
    path.write_text(printed.stdout, encoding="utf-8")
    assert len(load_plan(path).shots) >= 4
