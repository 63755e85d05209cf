"""`castkeep bench throughput`: the real command on three photos (the ratio is reported, never
asserted), and the rate arithmetic on a scripted clock whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from castkeep.benchmarks import throughput
from castkeep.errors import BenchmarkInputError


def test_throughput_cli(invoke, faces_dir, tmp_path):
    result = invoke("bench", "throughput", "--images", str(faces_dir / "deepface_celebs"), "--limit", "3",
                    "--rounds", "1", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images"] == 3 and data["rounds"] == 1
    for name in ("castkeep", "insightface"):
        (seconds,) = data[name]["round_seconds"]
        assert seconds > 0 and data[name]["images_per_s"] == pytest.approx(3 / seconds)
    # Same model pack and photos: both find each photo's face (castkeep detects at the photo's own size,
    # insightface upscales to 640, so faint background faces may differ either way).
    assert data["castkeep"]["faces"] >= 3 and data["insightface"]["faces"] >= 3
    assert data["ratio"] == pytest.approx(data["round_ratios"][0])
    stages = data["stages"]["ms_per_image"]
    for stage in ("decode", "decode_pil", "detect", "detect_640", "align", "embed", "embed_with_flip", "dlib"):
        assert stages[stage] > 0, stage
    assert data["stages"]["faces"] >= 3


def test_rates_use_the_median_round_on_a_scripted_clock(monkeypatch):
    """Stand-in pipelines advance a fake clock by set amounts: castkeep's rounds take 1, 4 and 2 s for
    2 images (median 2 s: 1 image/s; the mean would say 0.86), insightface's 3, 3 and 9 s (median 3 s:
    2/3 image/s), and the warm-up call is not timed."""
    clock = SimpleNamespace(now=0.0)
    script = {"castkeep": [50.0] + [0.5, 0.5, 2, 2, 1, 1], "insightface": [70.0] + [1.5, 1.5, 1.5, 1.5, 4.5, 4.5]}

    def stand_in(name: str, faces: int):
        class Pipeline:
            def __init__(self, *args, **kwargs) -> None:
                self.durations = iter(script[name])

            def analyze_all(self, paths: list[Path]) -> int:
                for _ in paths:
                    clock.now += next(self.durations)
                return faces * len(paths)

        return Pipeline

    monkeypatch.setattr(throughput, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(throughput, "CastkeepPipeline", stand_in("castkeep", 2))
    monkeypatch.setattr(throughput, "InsightFaceBaseline", stand_in("insightface", 1))
    pack = SimpleNamespace(name="pack", fingerprint="pack:fp", path=Path("pack"))
    result = throughput.run_throughput([Path("a.jpg"), Path("b.jpg")], pack, rounds=3)
    assert result["castkeep"]["round_seconds"] == [1.0, 4.0, 2.0]
    assert result["insightface"]["round_seconds"] == [3.0, 3.0, 9.0]
    assert result["castkeep"]["images_per_s"] == pytest.approx(1.0)
    assert result["insightface"]["images_per_s"] == pytest.approx(2 / 3)
    # The headline is the median of the rounds' ratios (3/1, 3/4, 9/2), not the ratio of median rates.
    assert result["round_ratios"] == pytest.approx([3.0, 0.75, 4.5])
    assert result["ratio"] == pytest.approx(3.0)
    assert result["castkeep"]["faces"] == 4 and result["insightface"]["faces"] == 2


def test_throughput_needs_images(invoke, tmp_path):
    result = invoke("bench", "throughput", "--images", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.returncode == BenchmarkInputError.exit_code and "no images" in result.stderr
