"""The store commands as a user runs them: two end-to-end runs of `python -m castkeep ...` in
subprocesses, the rest in-process through click's CliRunner and the same entry point."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest


def photos(faces_dir: Path, index: int) -> list[Path]:
    folder = sorted(p for p in (faces_dir / "lfw_gallery").iterdir() if p.is_dir())[index]
    return sorted(folder.glob("*.jpg"))


def assert_one_line_error(result, code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_store_commands_end_to_end(store_at, tmp_path, faces_dir, cli):
    store = str(store_at("store"))
    mara, other = photos(faces_dir, 10), photos(faces_dir, 11)

    result = cli("register", "Mara Ç", *map(str, mara[:3]), "--description", "lead", "--tag", "cast",
                 "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    registered = json.loads(result.stdout)
    assert registered["name"] == "Mara Ç" and registered["references"] == 3
    assert registered["tags"] == ["cast"] and registered["baseline"]["mean"] > 0.3
    assert set(registered["pose_coverage"]["bins"]) >= {"frontal", "left", "right"}

    # the second character arrives through export → import of a store built with the same pack
    result = cli("register", "Other", *map(str, other[:3]), "--store", str(store_at("second")))
    assert result.returncode == 0, result.stderr
    result = cli("export", "other", str(tmp_path), "--store", str(store_at("second")), "--json")
    exported = json.loads(result.stdout)["file"]
    result = cli("import", exported, "--store", store)
    assert result.returncode == 0 and "imported Other" in result.stdout, result.stderr

    listed = json.loads(cli("list", "--store", store, "--json").stdout)
    assert [c["name"] for c in listed] == ["Mara Ç", "Other"]
    shown = json.loads(cli("show", "mara ç", "--store", store, "--json").stdout)
    assert len(shown["reference_details"]) == 3 and shown["pose_coverage"]["covered"]
    assert "pose coverage" in cli("show", "Mara Ç", "--store", store).stdout

    result = cli("identify", str(mara[4]), "--store", store, "--json")
    matches = json.loads(result.stdout)
    assert [m["name"] for m in matches] == ["Mara Ç", "Other"]
    assert matches[0]["score"] > matches[1]["score"] and matches[0]["same"]

    result = cli("score", str(mara[4]), "--character", "Other", "--store", store, "--json")
    scored = json.loads(result.stdout)
    assert not scored["same"] and scored["leakage"] and scored["closest_other"]["name"] == "Mara Ç"
    assert 0 <= scored["probability"] < 0.5

    verified = json.loads(cli("verify", "--store", store, "--json").stdout)
    assert verified["ok"] and verified["characters"] == 2

    assert cli("remove", "Other", "--store", store).returncode == 0
    assert [c["name"] for c in json.loads(cli("list", "--store", store, "--json").stdout)] == ["Mara Ç"]


@pytest.mark.slow
def test_store_errors_are_one_line_and_lose_nothing(tmp_path, faces_dir, cli):
    from PIL import Image

    store = str(tmp_path / "store")
    mara = photos(faces_dir, 12)
    assert cli("register", "Kept", *map(str, mara[:2]), "--store", store).returncode == 0
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((240, 240, 3), 90, np.uint8)).save(blank)

    assert_one_line_error(cli("show", "Nobody", "--store", store), 8)
    assert_one_line_error(cli("score", str(mara[3]), "--character", "Nobody", "--store", store), 8)
    assert_one_line_error(cli("register", "../escape", str(mara[3]), "--store", store), 9)
    assert_one_line_error(cli("register", "kept", str(mara[3]), "--store", store), 10)
    result = cli("register", "Faceless", str(blank), "--store", store)
    assert_one_line_error(result, 4)
    assert "blank.png" in result.stderr
    assert_one_line_error(cli("import", str(blank), "--store", store), 7)
    assert_one_line_error(cli("list", "--store", str(blank)), 7)

    # a garbage index file is a cache: rebuilt, nothing lost
    (Path(store) / "index.faiss").write_bytes(b"garbage")
    result = cli("identify", str(mara[3]), "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["name"] == "Kept"
    assert [c["name"] for c in json.loads(cli("list", "--store", store, "--json").stdout)] == ["Kept"]

    # a smashed database is reported, not traced back
    (Path(store) / "castkeep.sqlite3").write_bytes(b"not a database at all" * 100)
    assert_one_line_error(cli("list", "--store", store), 7)


# ---------------------------------------------------------------------------------------------------
# In-process runs (click's CliRunner): the same entry point, without a new interpreter per command.

class EntryPoint:
    """What CliRunner drives (`.main(args=..., prog_name=...)`): castkeep's console entry point, so
    an error becomes its one stderr line and exit code exactly as for a user."""

    name = "castkeep"

    @staticmethod
    def main(args, prog_name, **_):
        from castkeep.cli.main import main

        main(list(args))


def run(*args):
    from click.testing import CliRunner

    return CliRunner().invoke(EntryPoint(), [str(a) for a in args])


def succeeded(result) -> dict | list:
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
    return json.loads(result.stdout)


def failed(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def fr_photos(faces_dir: Path, person: str) -> list[Path]:
    return sorted((faces_dir / "fr_examples" / person).glob("*.jpg"))


def test_face_and_photo_n_pick_a_face_of_a_group_photo(tmp_path, faces_dir):
    store = tmp_path / "store"
    two = faces_dir / "groups" / "fr_two_people.jpg"  # face 0 Joe Biden, face 1 Barack Obama
    assert "PHOTO:N" in failed(run("register", "Obama", two, "--store", store), 5)  # which face?
    registered = succeeded(run("register", "Obama", two, "--face", "1", "--store", store, "--json"))
    [reference] = registered["reference_details"]
    assert reference["face_index"] == 1 and reference["source_path"] == str(two.resolve())

    top = succeeded(run("identify", f"{two}:1", "--store", store, "--json"))[0]
    assert top["name"] == "Obama" and top["same"]
    top = succeeded(run("identify", two, "--face", "0", "--store", store, "--json"))[0]
    assert top["name"] == "Obama" and not top["same"]
    assert not succeeded(run("score", f"{two}:0", "-c", "Obama", "--store", store, "--json"))["same"]
    assert succeeded(run("score", two, "--face", "1", "-c", "Obama", "--store", store, "--json"))["same"]


def test_add_refs_with_photo_n_and_face(tmp_path, faces_dir):
    store = tmp_path / "store"
    obama = fr_photos(faces_dir, "barack_obama")
    three = faces_dir / "groups" / "fr_obama_and_biden.jpg"  # face 0 Obama, face 1 Biden, face 2 other
    two = faces_dir / "groups" / "fr_two_people.jpg"         # face 0 Biden, face 1 Obama
    succeeded(run("register", "Obama", *obama[:2], "--store", store, "--json"))

    # PHOTO:1 is Biden: refused as another person (unpicked, the matching face 0 would be used)
    assert "does not look like the same person" in failed(
        run("add-refs", "Obama", f"{three}:1", "--store", store), 11)
    updated = succeeded(run("add-refs", "obama", f"{three}:0", obama[2], "--store", store, "--json"))
    assert updated["references"] == 4 and updated["baseline"]["references"] == 4
    from_group = [r for r in updated["reference_details"] if r["source_path"] == str(three.resolve())]
    assert [r["face_index"] for r in from_group] == [0]

    # --face 0 of the other group photo is Biden: refused; without it, the face that matches the
    # stored references is used
    failed(run("add-refs", "Obama", two, "--face", "0", "--store", store), 11)
    result = run("add-refs", "Obama", two, "--store", store, "--json")
    assert succeeded(result)["references"] == 5 and "2 faces; used face 1" in result.stderr

    result = run("add-refs", "Obama", obama[3], obama[0], "--store", store, "--json")
    assert succeeded(result)["references"] == 6 and "already a reference of 'Obama'" in result.stderr
    assert "all are stored already" in failed(run("add-refs", "Obama", obama[0], "--store", store), 7)
    failed(run("add-refs", "Nobody", obama[3], "--store", store), 8)
    assert succeeded(run("show", "Obama", "--store", store, "--json"))["references"] == 6


def test_verify_catches_a_vector_that_no_longer_matches_its_references(tmp_path, faces_dir):
    store = tmp_path / "store"
    succeeded(run("register", "Obama", *fr_photos(faces_dir, "barack_obama")[:3], "--store", store, "--json"))
    succeeded(run("register", "Biden", *fr_photos(faces_dir, "joe_biden"), "--store", store, "--json"))
    assert succeeded(run("verify", "--store", store, "--json"))["ok"]

    # Give Obama Biden's vector behind the store's back (in both copies of the primary space, the
    # version-1 column and character_vectors): still a unit vector, but not his.
    connection = sqlite3.connect(store / "castkeep.sqlite3")
    with connection:
        for table, key in (("characters", "id"), ("character_vectors", "character_id")):
            connection.execute(f"UPDATE {table} SET vector = (SELECT vector FROM characters WHERE name = 'Biden') "
                               f"WHERE {key} = (SELECT id FROM characters WHERE name = 'Obama')")
    connection.close()
    result = run("verify", "--store", store, "--json")
    assert "store integrity check failed: 1 problem(s)" in failed(result, 7)
    report = json.loads(result.stdout)
    assert not report["ok"] and report["characters"] == 2
    assert report["problems"] == ["character 'Obama': vector does not match its references"]

    # Only one copy changed: the two disagree.
    connection = sqlite3.connect(store / "castkeep.sqlite3")
    with connection:
        connection.execute("UPDATE character_vectors SET vector = (SELECT r.embedding FROM refs r WHERE "
                           "r.character_id = character_vectors.character_id LIMIT 1) WHERE character_id = "
                           "(SELECT id FROM characters WHERE name = 'Biden')")
    connection.close()
    problems = json.loads(run("verify", "--store", store, "--json").stdout)["problems"]
    assert "character 'Biden': vector differs from its copy in character_vectors" in problems


def test_read_commands_never_create_a_store(tmp_path, faces_dir):
    missing = tmp_path / "typo"
    photo = fr_photos(faces_dir, "barack_obama")[0]
    for command in (["list"], ["show", "Obama"], ["identify", photo], ["score", photo, "-c", "Obama"],
                    ["verify"], ["remove", "Obama"], ["export", "Obama", tmp_path],
                    ["add-refs", "Obama", photo], ["reembed", "Obama", "--models", "buffalo_l"]):
        line = failed(run(*command, "--store", missing), 17)
        assert line == f"error: no character store at {missing} (register a character to create one)"
    assert not missing.exists()


def test_reembed_adds_a_space_that_show_lists(tmp_path, faces_dir, second_pack):
    store = tmp_path / "store"
    obama, biden = fr_photos(faces_dir, "barack_obama"), fr_photos(faces_dir, "joe_biden")
    succeeded(run("register", "Obama", *obama[:3], "--store", store, "--json"))
    succeeded(run("register", "Biden", *biden, "--store", store, "--json"))
    [space] = succeeded(run("show", "Obama", "--store", store, "--json"))["spaces"]
    assert (space["pack"], space["dim"], space["references"], space["primary"]) == ("buffalo_s_lite", 512, 3, True)

    report = succeeded(run("reembed", "obama", "--models", second_pack, "--store", store, "--json"))
    assert report["pack"] == "buffalo_s_copy" and report["complete"]
    assert [(c["name"], c["embedded"], c["from_crops"]) for c in report["characters"]] == [("Obama", 3, 3)]
    shown = succeeded(run("show", "Obama", "--store", store, "--json"))
    assert [(s["pack"], s["dim"], s["references"], s["primary"]) for s in shown["spaces"]] == [
        ("buffalo_s_lite", 512, 3, True), ("buffalo_s_copy", 512, 3, False)]
    assert shown["spaces"][1]["fingerprint"] == report["fingerprint"]
    assert all(r["crop"] for r in shown["reference_details"])
    text = run("show", "Obama", "--store", store).stdout
    assert "buffalo_s_copy" in text and "3/3 reference(s)" in text

    result = run("reembed", "--all", "--models", second_pack, "--store", store)
    assert result.exit_code == 0, result.stderr
    assert "Biden: 2/2 reference(s) embedded (2 from crops, 0 from photos)" in result.stdout
    assert "Obama: 3/3 reference(s) embedded (nothing new)" in result.stdout
    assert succeeded(run("verify", "--store", store, "--json"))["ok"]

    assert run("reembed", "--models", second_pack, "--store", store).exit_code == 2       # NAME or --all
    assert run("reembed", "Obama", "--all", "--models", second_pack, "--store", store).exit_code == 2
    assert run("reembed", "Obama", "--store", store).exit_code == 2                         # --models is required
    failed(run("reembed", "Nobody", "--models", second_pack, "--store", store), 8)
    failed(run("reembed", "Obama", "--models", tmp_path / "no_such_pack", "--store", store), 6)


def test_reembed_reports_references_it_cannot_embed(tmp_path, faces_dir, second_pack):
    # A reference without a crop (as migrated from a version-1 store) whose photo is gone.
    store = tmp_path / "store"
    photo = tmp_path / "gone.jpg"
    photo.write_bytes(fr_photos(faces_dir, "barack_obama")[0].read_bytes())
    succeeded(run("register", "Obama", photo, "--store", store, "--json"))
    photo.unlink()
    connection = sqlite3.connect(store / "castkeep.sqlite3")
    with connection:
        connection.execute("UPDATE refs SET crop = NULL, crop_kps = NULL")
    connection.close()
    result = run("reembed", "Obama", "--models", second_pack, "--store", store, "--json")
    assert result.exit_code == 7, result.stderr
    warning, error = result.stderr.strip().splitlines()  # what is missing, then why it failed
    assert warning == (f"warning: Obama: {photo} not embedded: no stored face crop, and the original photo "
                       f"is not there any more")
    assert error.startswith("error: no reference of Obama could be embedded with buffalo_s_copy")
    assert json.loads(result.stdout)["characters"][0]["missing"][0]["source_path"] == str(photo)
    [space] = succeeded(run("show", "Obama", "--store", store, "--json"))["spaces"]  # kept its own space
    assert space["pack"] == "buffalo_s_lite"


def test_export_never_writes_over_the_store_or_a_foreign_file(tmp_path, faces_dir):
    store = tmp_path / "store"
    succeeded(run("register", "Obama", *fr_photos(faces_dir, "barack_obama")[:2], "--store", store, "--json"))
    database = store / "castkeep.sqlite3"
    before = database.read_bytes()
    for target in (database, store / "index.faiss", store, store / "Obama.castkeep.json"):
        line = failed(run("export", "Obama", target, "--store", store), 7)
        assert "inside the store's own folder" in line
    assert database.read_bytes() == before
    assert succeeded(run("list", "--store", store, "--json"))[0]["name"] == "Obama"

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert "not a castkeep export; pass --overwrite" in failed(run("export", "Obama", notes, "--store", store), 7)
    assert notes.read_text() == "my notes\n"
    exported = tmp_path / "obama.castkeep.json"
    for _ in range(2):  # an earlier export of it is replaced without asking
        assert succeeded(run("export", "Obama", exported, "--store", store, "--json"))["file"] == str(exported)
    succeeded(run("export", "Obama", notes, "--overwrite", "--store", store, "--json"))
    assert notes.read_text().lstrip().startswith('{\n "format": "castkeep-character"')


@pytest.mark.slow
def test_identify_judges_at_the_open_set_threshold_for_the_store_size(tmp_path, faces_dir, invoke):
    store = str(tmp_path / "store")
    mara = photos(faces_dir, 10)
    assert invoke("register", "Mara", *map(str, mara[:2]), "--store", store).returncode == 0
    [match] = json.loads(invoke("identify", str(mara[4]), "--store", store, "--json").stdout)
    assert match["same"] and match["open_set"] == {"threshold": 0.27, "target_fpir": 0.01, "characters": 1,
                                                   "one_to_one_threshold": 0.27, "fitted": True}
    [strict] = json.loads(invoke("identify", str(mara[4]), "--store", store, "--fpir", "1e-12", "--json").stdout)
    assert not strict["same"] and strict["open_set"]["threshold"] > 1.0 and strict["score"] == match["score"]
    assert strict["scores"]["arcface"]["threshold"] == strict["open_set"]["threshold"]
    text = invoke("identify", str(mara[4]), "--store", store, "--fpir", "0.001").stdout
    assert "open-set cosine threshold 0.270 (for 1 character(s) at FPIR 0.10%; 1:1 threshold 0.270)" in text
    assert invoke("identify", str(mara[4]), "--store", store, "--fpir", "0").returncode == 2  # not a rate


def test_register_leaves_out_unusable_photos_and_warns_on_borderline_ones(tmp_path, faces_dir, invoke):
    """Issue 13 item 21: 2 good photos + 1 whose face is 12 px register with 2 (the tiny one named on stderr and
    in --json `warnings`); --strict refuses all (exit 13, store unchanged); a 24 px face registers with a warning."""
    import cv2

    from castkeep.benchmarks.quality_gate import downscale
    from castkeep.identity.analyzer import FaceAnalyzer

    store = str(tmp_path / "store")
    mara, other = photos(faces_dir, 12), photos(faces_dir, 13)
    with FaceAnalyzer.from_pretrained(None, dense=False, landmarks_106=False) as analyzer:
        def shrunk(photo: Path, face_px: float) -> str:
            image = cv2.imread(str(photo))
            path = tmp_path / f"{face_px}px-{photo.name}"  # a copy: never write into the shared photos
            cv2.imwrite(str(path), downscale(image, analyzer.analyze(image).face().quality.face_px, face_px))
            return str(path)
        tiny, small = shrunk(mara[2], 12), shrunk(other[2], 24)

    assert invoke("register", "Other", str(other[0]), "--store", store).returncode == 0
    refused = invoke("register", "Mara", str(mara[0]), str(mara[1]), tiny, "--strict", "--store", store)
    assert refused.returncode == 13 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error: ") and Path(tiny).name in refused.stderr
    assert [c["name"] for c in json.loads(invoke("list", "--store", store, "--json").stdout)] == ["Other"]

    result = invoke("register", "Mara", str(mara[0]), str(mara[1]), tiny, "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    registered = json.loads(result.stdout)
    assert registered["references"] == 2
    left_out = [w for w in registered["warnings"] if "left out" in w]
    assert len(left_out) == 1 and Path(tiny).name in left_out[0] and "too small" in left_out[0]
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and Path(tiny).name in warned[0]

    result = invoke("add-refs", "Other", small, "--store", store)
    assert result.returncode == 0 and "2 reference(s)" in result.stdout, result.stderr
    assert result.stderr.startswith("warning: ") and "small face" in result.stderr and result.stderr.count("\n") == 1
