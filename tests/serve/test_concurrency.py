"""Many requests at once: answers equal to the same request alone, registrations all stored."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_helpers import GALLERY, MARA, THEO, photo_files

pytestmark = pytest.mark.slow


def test_concurrent_identify_and_register(client):
    probes = [MARA[3], MARA[4], THEO[4], THEO[5]]

    def identify(path):
        image = {"image": (path.name, path.read_bytes(), "image/jpeg")}
        answer = client.post("/api/identify", data={"scorer": "fused"}, files=image)
        assert answer.status_code == 200, answer.text
        return answer.json()["matches"]

    alone = {path: identify(path) for path in probes}
    people = ["Alvaro_Uribe", "Amelie_Mauresmo", "Andre_Agassi"]

    def register(person):
        photos = sorted((GALLERY / person).glob("*.jpg"))[:2]
        return client.post("/api/characters", data={"name": person}, files=photo_files(photos))

    with ThreadPoolExecutor(max_workers=8) as pool:
        identified = list(pool.map(identify, probes * 4))
        registered = list(pool.map(register, people))
    assert [r.status_code for r in registered] == [201] * len(people), [r.text for r in registered]
    # Registrations ran meanwhile (the open-set threshold follows the store's size): a probe's own character
    # still comes first, with the same numbers.
    for path, matches in zip(probes * 4, identified, strict=True):
        keys = ("name", "cosine", "score", "probability")
        assert [matches[0][k] for k in keys] == [alone[path][0][k] for k in keys]
    names = {c["name"] for c in client.get("/api/characters").json()}
    assert names == {"Mara", "Theo", *people}
    for person in people:
        assert client.delete(f"/api/characters/{person}").status_code == 200
