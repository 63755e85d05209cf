"""`castkeep bench serve` against a running server: latency figures, no errors, the CLI's answers, bad uploads; and
against a server started with --token-reads, whose every request needs the token."""

from __future__ import annotations

import json
import shutil

import pytest
from serve_helpers import MARA, THEO, photo_files, start_server, stop_server

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


def test_bench_serve_sends_the_token_a_token_reads_server_needs(invoke, tmp_path):
    import httpx

    token = "bench secret"
    server = start_server(tmp_path / "store", tmp_path / "server.log", "--token", token, "--token-reads")
    try:
        for name, photos in (("Mara", MARA[:2]), ("Theo", THEO[:2])):
            answer = httpx.post(f"{server.url}/api/characters", data={"name": name}, files=photo_files(photos),
                                headers={"Authorization": f"Bearer {token}"}, timeout=120)
            assert answer.status_code == 201, answer.text
        probes = tmp_path / "probes"
        probes.mkdir()
        shutil.copy(MARA[5], probes / MARA[5].name)
        args = ("bench", "serve", "--images", str(probes), "--store", str(server.store), "--url", server.url,
                "--clients", "2", "--requests", "2", "--limit", "1", "--out", str(tmp_path / "out"), "--json")
        # Without the token (or with a wrong one): one line saying what to do, before any load; not a crash (70).
        for extra, says in (((), "pass --token TOKEN or set CASTKEEP_TOKEN"), (("--token", "guess"), "refused the token")):
            refused = invoke(*args, *extra, env={"CASTKEEP_TOKEN": None})
            assert refused.returncode == 16, (refused.returncode, refused.stderr)
            assert says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert not (tmp_path / "out" / "serve.json").exists()
        # The token from castkeep serve's own variable: every request carries it, none is refused.
        result = invoke(*args, env={"CASTKEEP_TOKEN": token})
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["token"] is True and token not in result.stdout
        for kind in ("identify", "score"):
            phase = data["phases"][kind]
            assert phase["requests"] == 4 and phase["errors"] == 0 and phase["mismatches"] == 0
        # The bad uploads are refused for what they are (not 401s for want of the token), and the server still serves.
        assert [c["status"] for c in data["hostile"]["cases"]] == [400, 415, 413, 400]
        assert data["hostile"]["serving_after"]
    finally:
        stop_server(server)


def test_bench_serve_on_openvino_starts_its_server_and_times_the_default_cli_too(live_server, invoke, tmp_path):
    """--device openvino: the server it starts and the CLI's reference answers both run OpenVINO (the answers agree);
    the headline is against the faster cold command, the default device's included."""
    pytest.importorskip("openvino")
    probes = tmp_path / "probes"
    probes.mkdir()
    shutil.copy(THEO[5], probes / THEO[5].name)
    result = invoke("bench", "serve", "--images", str(probes), "--store", str(live_server.store), "--device", "openvino",
                    "--workers", "2", "--clients", "2", "--requests", "2", "--limit", "1", "--out", str(tmp_path / "out"),
                    "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["device"] == "openvino" and data["url"] is None
    assert data["server_runs_on"]["recognition"] == data["server_runs_on"]["detection"] == ["OpenVINO:CPU"]
    for kind in ("identify", "score"):
        phase = data["phases"][kind]
        assert phase["requests"] == 4 and phase["errors"] == 0 and phase["mismatches"] == 0
    cold, default = data["cli_cold_identify_s"]["median"], data["cli_cold_identify_default_device_s"]["median"]
    assert data["cold_baseline_s"] == round(min(cold, default), 3) > 0
    assert "Uvicorn running" in (tmp_path / "out" / "serve-server.log").read_text()
