"""The bench runs as library calls (what `castkeep bench` wraps): one saved, stamped result each."""

from __future__ import annotations

import json

import pytest

from castkeep.benchmarks.runs import bench_consistency, bench_store


def test_bench_store_returns_what_it_saved(tmp_path):
    result = bench_store([1000], kinds=["exact"], queries=5, name="small run", out_dir=tmp_path)
    path = tmp_path / "small_run.json"
    assert result["result_json"] == str(path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))
    assert result["environment"]["cpu_count"] and result["finished_at"] and result["plots"] == {}
    (row,) = result["sizes"]
    assert set(row["indexes"]) == {"exact"} and row["indexes"]["exact"]["recall_at_10"] == 1.0


@pytest.mark.slow  # ArcFace and dlib describe every image
def test_bench_consistency_on_photos_of_one_person(faces_dir, pack_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for photo in sorted((faces_dir / "lfw_gallery" / "Abdullah_Gul").glob("*.jpg"))[:3]:
        (run_dir / photo.name).write_bytes(photo.read_bytes())
    result = bench_consistency(run_dir, store=tmp_path / "no-store", models=pack_dir)
    assert result["with_face"] == 3 and result["reference"] != "Abdullah_Gul"
    assert set(result["plots"]) == {"pairwise heatmap", "pairwise heatmap (dlib)", "score histogram"}
    for plot in result["plots"].values():
        assert plot.startswith(str(run_dir / "consistency")) and (run_dir / "consistency").is_dir()
    assert json.loads((run_dir / "consistency" / "consistency-run.json").read_text())["with_face"] == 3
