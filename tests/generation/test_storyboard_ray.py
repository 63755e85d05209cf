"""`castkeep storyboard --ray`: a local Ray cluster of two CPU workers runs the 6-shot, 2-character plan of
test_storyboard.py into the same files as one process; a worker killed mid-run loses only the request it
held, which another worker makes again; a run without --ray never imports Ray; no Ray process outlives a
test. And `castkeep bench series` on a run: each shot's time split into pipeline / scoring / overhead."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# The plan, its characters and the CLI helpers are test_storyboard.py's (tests/generation is on sys.path).
import test_storyboard as story
from test_storyboard import PLAN, arguments, invoke_cli, kept_pixels, pixels

cast_store, plan_file = story.cast_store, story.plan_file  # its module fixtures, run again for this module

pytestmark = [pytest.mark.generation, pytest.mark.slow, pytest.mark.subprocess]


def ray_processes() -> set[int]:
    """Ray's own processes on this machine (GCS, raylet, workers, agents)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("ray::") or "/ray/session_" in command or "site-packages/ray/" in command:
            found.add(int(entry.name))
    return found


@pytest.fixture
def no_ray_left_behind():
    """Ray (skipped without the castkeep[ray] extra); every Ray process the test starts is gone when it
    ends (shutdown stops them within seconds)."""
    ray = pytest.importorskip("ray")
    before = ray_processes()
    yield ray
    deadline = time.monotonic() + 30
    while (left := ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left running: {sorted(left)}"


@pytest.fixture(scope="module")
def one_thread_run(tmp_path_factory, plan_file, tiny_models, cast_store) -> Path:
    """The plan in this process with torch on one thread, as each CPU Ray worker runs it (Ray sets
    OMP_NUM_THREADS=1 for a one-CPU actor): summing floats in another order can move a pixel by one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("in-process") / "run"
        result = invoke_cli(*arguments(plan_file, out, tiny_models, cast_store), "--json")
    finally:
        torch.set_num_threads(threads)
    assert result.returncode == 0, result.stderr
    return out


def ledger_rows(run: Path) -> tuple[dict[str, tuple], dict[tuple[str, int], tuple]]:
    """Each shot's state, target and kept takes; each take's seed, verdict and file name."""
    with sqlite3.connect(run / "ledger.sqlite3") as db:
        shots = {shot: (state, target_met, [(k["attempt"], k["file"], k["seed"]) for k in json.loads(kept)])
                 for shot, state, target_met, kept in db.execute("SELECT id, state, target_met, kept FROM shots")}
        attempts = {(shot, attempt): (seed, passed, file) for shot, attempt, seed, passed, file in
                    db.execute("SELECT shot, attempt, seed, passed, file FROM attempts")}
    return shots, attempts


def assert_same_files(run: Path, reference: Path) -> None:
    """The same ledger states and the same pixels in every kept image and every take."""
    assert ledger_rows(run) == ledger_rows(reference)
    expected, got = kept_pixels(reference), kept_pixels(run)
    assert sorted(got) == sorted(expected) and len(got) == 6
    assert all(np.array_equal(got[name], expected[name]) for name in expected)
    takes = sorted(p.relative_to(reference) for p in (reference / "attempts").rglob("*.png"))
    assert takes == sorted(p.relative_to(run) for p in (run / "attempts").rglob("*.png")) and len(takes) == 12
    assert all(np.array_equal(pixels(run / take), pixels(reference / take)) for take in takes)


def test_two_ray_workers_make_the_same_files_as_one_process(tmp_path, one_thread_run, plan_file, tiny_models,
                                                             cast_store, no_ray_left_behind):
    ray = no_ray_left_behind
    out = tmp_path / "run"
    result = invoke_cli(*arguments(plan_file, out, tiny_models, cast_store), "--ray", "auto", "--workers", "2",
                        "--json")
    assert result.returncode == 0, result.stderr
    assert not ray.is_initialized()  # the cluster it started is shut down
    assert_same_files(out, one_thread_run)
    summary = json.loads(result.stdout)
    assert summary["images_generated"] == summary["pipeline_calls"] == 12
    # Both workers took shots (the second joins seconds after the first starts working); each shot's time
    # split names its worker, and nothing was re-queued.
    splits = [shot["timing"]["split"] for shot in summary["shots"]]
    workers = {worker.split()[0] for split in splits for worker in split["workers"]}
    assert len(workers) == 2 and all(w.startswith("castkeep-storyboard-") for w in workers)
    assert all(split["requeued"] == 0 and split["pipeline_s"] > 0 for split in splits)
    assert sum(split["images"] for split in splits) == 12


def test_a_worker_killed_mid_run_loses_only_its_request(tmp_path, one_thread_run, plan_file, tiny_models,
                                                        cast_store, no_ray_left_behind):
    ray = no_ray_left_behind
    from castkeep.generation.storyboard.ray_workers import ACTOR_PREFIX
    from castkeep.generation.storyboard.runner import run_storyboard

    events = []

    def kill_the_other_worker(event) -> None:
        """After the first shot, the worker still busy with its own shot is killed (no restart)."""
        events.append(event)
        if len(events) == 1:
            finished_by = event.worker.split()[0]
            others = [name for name in ray.util.list_named_actors() if name.startswith(ACTOR_PREFIX)
                      and name != finished_by]
            assert len(others) == 1
            ray.kill(ray.get_actor(others[0]), no_restart=True)

    out = tmp_path / "run"
    result = run_storyboard(plan_file, out_dir=out, store=cast_store, base_model=tiny_models["pipeline"],
                            ip_adapter=tiny_models["faceid"], device="cpu", ray="auto", workers=2,
                            on_shot=kill_the_other_worker)
    assert not ray.is_initialized()
    # Every shot finished, each once; the lost request was made again by another worker with the same seeds.
    assert sorted(event.shot.id for event in events) == [f"s{i}" for i in range(1, 7)]
    assert result.summary["counts"]["unfinished"] == 0 and result.summary["counts"]["error"] == 0
    assert_same_files(out, one_thread_run)
    splits = {shot["id"]: shot["timing"]["split"] for shot in result.summary["shots"]}
    assert sum(split["requeued"] for split in splits.values()) == 1
    # Only what was written counts: 12 takes, one pipeline call each, as in an undisturbed run.
    assert result.images_generated == result.pipeline_calls == 12


def test_a_run_without_ray_never_imports_it(tmp_path, tiny_models, cast_store):
    plan = tmp_path / "one.toml"
    plan.write_text(PLAN.split("[[shots]]")[0] + "[[shots]]" + PLAN.split("[[shots]]")[1], encoding="utf-8")
    argv = arguments(plan, tmp_path / "run", tiny_models, cast_store)
    code = ("import sys\nfrom castkeep.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n"
            "    assert not exc.code, exc.code\nprint('ray' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=dict(os.environ),
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "run" / "shots" / "s1.png").is_file()

    usage = invoke_cli(*argv, "--workers", "2")
    assert usage.returncode == 2 and "--workers needs --ray" in usage.stderr


def test_bench_series_splits_each_shots_time(tmp_path, one_thread_run):
    """`castkeep bench series RUN_DIR`: per shot, pipeline / scoring / castkeep's overhead (files, ledger,
    the rest), which add up to the shot's time; the overhead against the pipeline and a 2.3 s GPU image."""
    result = invoke_cli("bench", "series", str(one_thread_run), "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    bench = json.loads(result.stdout)
    assert bench["shots"] == bench["shots_measured"] == 6 and bench["images"] == 12
    assert bench["workers"] == ["in-process"] and bench["requeued"] == 0
    summary = json.loads((one_thread_run / "summary.json").read_text())
    for shot, measured in zip(summary["shots"], bench["per_shot"], strict=True):
        split = shot["timing"]["split"]
        assert measured["id"] == shot["id"] and measured["images"] == shot["attempts"]
        parts = split["files_s"] + split["ledger_s"] + split["other_s"]
        assert split["overhead_s"] == pytest.approx(parts, abs=1e-4) and split["files_s"] > 0 and split["ledger_s"] > 0
        # In one process the parts are the shot's whole time (transfer is Ray's).
        whole = split["pipeline_s"] + split["scoring_s"] + split["overhead_s"]
        assert split["transfer_s"] < 1e-3 and whole == pytest.approx(split["wall_s"], rel=0.05)
        assert measured["overhead_share"] == pytest.approx(split["overhead_s"] / split["pipeline_s"])
        assert measured["gpu_share"] == pytest.approx(split["overhead_s"] / split["images"] / 2.3, rel=1e-3)
    projection = bench["projection"]
    assert projection["gpu_image_s"] == 2.3 and projection["meets_goal"] == (projection["share"]["median"] < 0.1)
    assert json.loads((tmp_path / f"series-{one_thread_run.name}.json").read_text())["images"] == 12

    text = invoke_cli("bench", "series", str(one_thread_run), "--out", str(tmp_path), "--gpu-image-s", "1.0")
    assert text.returncode == 0 and "castkeep overhead per image" in text.stdout and "of a 1 s GPU image" in text.stdout
    missing = invoke_cli("bench", "series", str(tmp_path), "--out", str(tmp_path))
    assert missing.returncode == 16 and "no summary.json" in missing.stderr


def test_ray_workers_mark_their_takes_into_the_same_files(tmp_path, plan_file, tiny_models, cast_store,
                                                          no_ray_left_behind):
    """At 256x256 (large enough to carry the watermark) each Ray worker marks its own takes: every file
    carries the mark and has the pixels and provenance of a one-thread in-process run's."""
    import torch
    from test_storyboard_writer import PLAN_256, run_256
    from tiny_pipelines import build_tiny_pipeline

    from castkeep.generation.provenance.inspection import inspect_image

    pipe = build_tiny_pipeline()
    pipe.unet.register_to_config(sample_size=128)
    tiny_256 = tmp_path / "tiny-sd15-256"
    pipe.save_pretrained(tiny_256, safe_serialization=True)
    plan = tmp_path / "marked.toml"
    plan.write_text(PLAN_256, encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run_256(plan, tmp_path / "in-process", tiny_256, tiny_models, cast_store)
    finally:
        torch.set_num_threads(threads)
    assert reference.returncode == 0, reference.stderr
    result = run_256(plan, tmp_path / "ray", tiny_256, tiny_models, cast_store, "--ray", "auto", "--workers", "2")
    assert result.returncode == 0, result.stderr
    names = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").glob("*/**/*.png"))
    assert names == sorted(p.relative_to(tmp_path / "in-process") for p in (tmp_path / "in-process").glob("*/**/*.png"))
    assert len(names) == 7
    for name in names:
        marked, expected = tmp_path / "ray" / name, tmp_path / "in-process" / name
        assert inspect_image(marked)["watermark"]["status"] == "found", name
        assert np.array_equal(pixels(marked), pixels(expected)), name
        provenance = json.loads(marked.with_suffix(".json").read_text())["provenance"]
        assert provenance == json.loads(expected.with_suffix(".json").read_text())["provenance"]
