"""Who may change the store: the bearer token when there is one; without one, only this machine, and no page
of another origin."""

from __future__ import annotations

import pytest
from serve_helpers import MARA, make_client, photo_files

from castkeep.errors import ConfigError
from castkeep.serve.config import check_bind, is_local_host

TOKEN = "correct horse battery staple"


@pytest.mark.slow  # loads the face models
def test_writes_need_the_token_reads_do_not(tmp_path):
    with make_client(tmp_path / "store", token=TOKEN, workers=1) as client:
        client.base_url = "http://studio.example"  # with a token, any host name may reach it
        photos = photo_files(MARA[:2])
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            refused = client.post("/api/characters", data={"name": "Mara"}, files=photos, headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["type"] == "AuthenticationError"
            assert refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/characters").json() == []
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/api/characters", data={"name": "Mara"}, files=photos, headers=auth).status_code == 201
        probe = {"image": ("probe.jpg", MARA[3].read_bytes(), "image/jpeg")}
        assert client.post("/api/identify", files=probe).json()["matches"][0]["name"] == "Mara"  # reads are open
        assert client.get("/api/status").json()["writes_need_token"] is True
        assert client.delete("/api/characters/Mara").status_code == 401
        assert client.delete("/api/characters/Mara", headers=auth).status_code == 200


@pytest.mark.slow
def test_without_a_token_only_this_machine_and_no_other_origin(tmp_path):
    with make_client(tmp_path / "store", workers=1) as client:
        photos = photo_files(MARA[:2])
        rebound = client.get("/api/status", headers={"Host": "attacker.example"})
        assert rebound.status_code == 421 and rebound.json()["error"]["type"] == "MisdirectedRequest"
        for origin in ("http://attacker.example", "null"):
            refused = client.post("/api/characters", data={"name": "Mara"}, files=photos, headers={"Origin": origin})
            assert refused.status_code == 403 and refused.json()["error"]["type"] == "ForbiddenOrigin"
        same_origin = client.post("/api/characters", data={"name": "Mara"}, files=photos,
                                  headers={"Origin": "http://127.0.0.1"})
        assert same_origin.status_code == 201, same_origin.text
        assert client.get("/api/status", headers={"Host": "localhost:8000"}).status_code == 200


def test_a_server_without_a_token_listens_on_this_machine_only():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_local_host(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "studio.example"):
        assert not is_local_host(host)
        with pytest.raises(ConfigError, match="without a token"):
            check_bind(host, None)
        check_bind(host, TOKEN)


def test_serve_refuses_a_public_address_without_a_token(invoke, tmp_path):
    result = invoke("serve", "--host", "0.0.0.0", "--store", str(tmp_path / "store"), env={"CASTKEEP_TOKEN": None})
    assert result.returncode == 2 and "without a token" in result.stderr
    assert not (tmp_path / "store").exists()  # refused before anything loads or is created
