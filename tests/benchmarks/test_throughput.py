"""`castkeep bench throughput` on three photos: the ratio is reported, never asserted."""

from __future__ import annotations

import json

from castkeep.errors import BenchmarkInputError


def test_throughput_cli(cli, faces_dir, tmp_path):
    result = cli("bench", "throughput", "--images", str(faces_dir / "deepface_celebs"), "--limit", "3",
                 "--rounds", "1", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images"] == 3 and data["rounds"] == 1
    assert data["castkeep"]["images_per_s"] > 0 and data["insightface"]["images_per_s"] > 0
    assert data["ratio"] == data["castkeep"]["images_per_s"] / data["insightface"]["images_per_s"]
    # Same model pack and photos: castkeep's first detection pass equals insightface's, and its
    # retries can only add faces.
    assert data["castkeep"]["faces"] >= data["insightface"]["faces"] >= 3


def test_throughput_needs_images(cli, tmp_path):
    result = cli("bench", "throughput", "--images", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.returncode == BenchmarkInputError.exit_code and "no images" in result.stderr
