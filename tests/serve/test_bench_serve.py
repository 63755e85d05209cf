"""`castkeep bench serve` against a running server: latency figures, no errors, the CLI's answers, bad uploads."""

from __future__ import annotations

import json
import shutil

import pytest
from serve_helpers import MARA, THEO

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def test_bench_serve_against_a_running_server(live_server, invoke, tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    for photo in (MARA[5], THEO[5]):
        shutil.copy(photo, probes / photo.name)
    result = invoke("bench", "serve", "--images", str(probes), "--store", str(live_server.store), "--url", live_server.url,
                    "--clients", "3", "--requests", "2", "--limit", "2", "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for kind in ("identify", "score"):
        phase = data["phases"][kind]
        assert phase["requests"] == 6 and phase["errors"] == 0 and phase["mismatches"] == 0
        assert 0 < phase["latency_ms"]["p50"] <= phase["latency_ms"]["p99"]
    assert data["cli_cold_identify_s"]["median"] > 0 and data["identify_p50_speedup"] > 0
    assert data["hostile"]["all_refused"] and data["hostile"]["serving_after"]
    assert [c["status"] for c in data["hostile"]["cases"]] == [400, 415, 413, 400]
    assert (tmp_path / "out" / "serve.json").is_file()
