"""--rate-limit: a token bucket per client address in front of every POST under /api; a client over it gets
a 429 JSON error with Retry-After, answered before its upload is read, and the server goes on serving."""

from __future__ import annotations

import time

import pytest
from serve_helpers import MARA, make_client, photo_files

from castkeep.errors import ConfigError
from castkeep.serve import ServeConfig
from castkeep.serve.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_buckets_allow_a_burst_then_the_rate_per_client():
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token in 1/rate s
    assert buckets.take("b") == 0  # another client has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0 and buckets.take("a") == pytest.approx(0.5)
    clock.now += 60  # refills to the burst, never past it
    assert [buckets.take("a") for _ in range(4)][-1] > 0


def test_rate_settings_are_checked():
    for settings in ({"rate_limit": -1}, {"rate_limit": 20_000}, {"rate_burst": 0}):
        with pytest.raises(ConfigError):
            ServeConfig(**settings)


@pytest.mark.slow  # loads the face models
def test_a_client_over_the_limit_gets_429_with_retry_after_and_the_server_goes_on(tmp_path):
    probe = {"image": ("probe.jpg", MARA[3].read_bytes(), "image/jpeg")}
    with make_client(tmp_path / "store", workers=1, rate_limit=0.2, rate_burst=2) as client:
        assert client.post("/api/characters", data={"name": "Mara"}, files=photo_files(MARA[:2])).status_code == 201
        assert client.post("/api/identify", files=probe).status_code == 200  # the burst's second request
        refused = client.post("/api/identify", files=probe)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "TooManyRequests" and "retry in" in refused.json()["error"]["message"]
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 5
        # An upload over the limit is refused unread, whatever it is; reads are not limited.
        assert client.post("/api/characters", data={"name": "Theo"}, files=photo_files(MARA[2:4])).status_code == 429
        assert client.get("/api/characters").status_code == 200 and client.get("/api/status").json()["rate_limit"] == {
            "per_second": 0.2, "burst": 2}
        time.sleep(retry)
        answer = client.post("/api/identify", files=probe)
        assert answer.status_code == 200 and answer.json()["matches"][0]["name"] == "Mara"


def test_no_limit_by_default(served):
    client = served[0]
    assert client.get("/api/status").json()["rate_limit"] is None
    statuses = {client.post("/api/compare", files={"image_a": ("a.jpg", b"", "image/jpeg"),
                                                    "image_b": ("b.jpg", b"", "image/jpeg")}).status_code
                for _ in range(30)}
    assert statuses == {400}  # each refused for its empty files, none for its rate
