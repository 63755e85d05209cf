"""Hostile input through the CLI (issue 13), in-process through the console entry point.

`test_hostile_input_is_refused_cleanly` runs a table of broken, crafted and odd inputs against one small store
(registered once per module from real photos with buffalo_s_lite) and asserts for every row: a non-zero exit code
that is neither 1 nor 70 (those mean a bug), the expected code, exactly one `error:` line on stderr, and the store's
logical content unchanged. The tests after it cover hostile input that castkeep should *accept* safely.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A description and tag that would clear the screen, set the window title, colour the output, forge a line and
# reverse the text if printed raw.
EVIL_DESCRIPTION = "lead\x1b]0;pwned\x07\x1b[2J\nproblem: store corrupt\x9b31m \u202eevil"
EVIL_TAG = "cast\x1b[31mred"


def _photos(faces_dir: Path, index: int) -> list[Path]:
    folder = sorted(p for p in (faces_dir / "lfw_gallery").iterdir() if p.is_dir())[index]
    return sorted(folder.glob("*.jpg"))


@dataclass
class Hostile:
    """The module's store and the hostile files the table refers to, made on first use."""

    store: Path
    folder: Path
    photo: Path       # a one-face photo of Mara not stored
    export: Path      # Mara, exported

    def file(self, name: str) -> Path:
        path = self.folder / name
        if not path.exists() and not path.is_symlink():
            MAKERS[name](path, self)
        return path


def _image(width: int, height: int) -> Callable[[Path, Hostile], None]:
    return lambda path, _: Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


def _crafted_export(change: Callable[[dict], None]) -> Callable[[Path, Hostile], None]:
    """Mara's export with one field changed and the checksum recomputed, as an attacker would."""
    def make(path: Path, hostile: Hostile) -> None:
        from castkeep.identity.portable import _checksum

        document = json.loads(hostile.export.read_text(encoding="utf-8"))
        change(document)
        document["checksum"] = _checksum(document)
        path.write_text(json.dumps(document), encoding="utf-8")
    return make


def _every_reference(key: str, value: object) -> Callable[[dict], None]:
    return lambda document: [reference.__setitem__(key, value) for reference in document["references"]]


def _resized(dim: int, scale: float = 1.0) -> Callable[[dict], None]:
    """Item 3: the store's model fingerprint over embeddings of `dim` values (times `scale`), with the character
    vector and spaces recomputed so that the file is self-consistent: only the store can tell it is wrong."""
    def change(document: dict) -> None:
        from castkeep.identity.references import combine
        from castkeep.identity.vectors import decode_vector, encode_vector, normalise

        fingerprint = document["fingerprint"]
        embeddings = [normalise(decode_vector(r["embedding"])[:dim]) * scale for r in document["references"]]
        for reference, embedding in zip(document["references"], embeddings, strict=True):
            reference["embedding"] = encode_vector(embedding)
            reference["embeddings"] = {fingerprint: reference["embedding"]}
        vector = encode_vector(combine(np.stack(embeddings), np.array([r["quality"] for r in document["references"]])))
        document.update(dim=dim, vector=vector, spaces=[{"fingerprint": fingerprint, "dim": dim, "vector": vector}])
    return change


def _many_references(count: int) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        first = document["references"][0]
        document["references"] = [{**first, "sha256": f"{i:064x}"} for i in range(count)]
    return change


def _undecodable_crop(document: dict) -> None:
    """A PNG header of the crop size over a body that is not PNG data."""
    import base64

    png = base64.b64decode(document["references"][0]["crop"])
    document["references"][0]["crop"] = base64.b64encode(png[:33] + b"\0" * 2000).decode()


def _symlink_loop(path: Path, _: Hostile) -> None:
    other = path.with_name("loop-b.jpg")
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def _pairs_of(image: str, lines: list[str]) -> Callable[[Path, Hostile], None]:
    def make(path: Path, hostile: Hostile) -> None:
        hostile.file(image)
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return make


def _padded_photo(size: int) -> Callable[[Path, Hostile], None]:
    """The unstored photo of Mara followed by zeros up to `size` bytes (sparse: no disk used). JPEG decoders stop
    at the image's end, so only the file's size tells it from the photo."""
    def make(path: Path, hostile: Hostile) -> None:
        path.write_bytes(hostile.photo.read_bytes())
        os.truncate(path, size)
    return make


MAKERS: dict[str, Callable[[Path, Hostile], None]] = {
    "wide-640x2.png": _image(640, 2),
    "tall-2x640.png": _image(2, 640),
    "wide-20000x20.png": _image(20000, 20),
    "noface.png": _image(320, 240),
    "empty.jpg": lambda path, _: path.write_bytes(b""),
    "text.jpg": lambda path, _: path.write_text("not a picture\n"),
    "truncated.jpg": lambda path, h: path.write_bytes(h.photo.read_bytes()[:2000]),
    "loop.jpg": _symlink_loop,
    "fifo.jpg": lambda path, _: os.mkfifo(path),
    "landmarker.task": lambda path, _: path.write_bytes(b"PK\x03\x04 not really a zip"),
    "nested.castkeep.json": lambda path, _: path.write_text("[" * 100_000 + "]" * 100_000),
    "nested-object.castkeep.json": lambda path, _: path.write_text('{"a":' * 100_000 + "1" + "}" * 100_000),
    "refs-ints.castkeep.json": _crafted_export(lambda d: d.update(references=[1, 2])),
    "refs-none.castkeep.json": _crafted_export(lambda d: d.update(references=[None])),
    # item 3: crafted files, checksum recomputed
    "dim256.castkeep.json": _crafted_export(_resized(256)),
    "not-unit.castkeep.json": _crafted_export(_resized(512, scale=3.0)),
    "65-refs.castkeep.json": _crafted_export(_many_references(65)),
    "same-photo-twice.castkeep.json": _crafted_export(lambda d: d["references"].append(dict(d["references"][0]))),
    "long-tag.castkeep.json": _crafted_export(lambda d: d.update(tags=["t" * 65])),
    "many-tags.castkeep.json": _crafted_export(lambda d: d.update(tags=[f"t{i}" for i in range(65)])),
    "long-description.castkeep.json": _crafted_export(lambda d: d.update(description="d" * 5000)),
    "crop-undecodable.castkeep.json": _crafted_export(_undecodable_crop),
    "crop-kps-outside.castkeep.json": _crafted_export(_every_reference("crop_kps", [[1e6, 0.0]] * 5)),
    "quality-nan.castkeep.json": _crafted_export(_every_reference("quality", float("nan"))),
    "det-score-text.castkeep.json": _crafted_export(_every_reference("det_score", "0.9")),
    "bbox-text.castkeep.json": _crafted_export(_every_reference("bbox", ["a", "b", "c", "d"])),
    "face-index-negative.castkeep.json": _crafted_export(_every_reference("face_index", -1)),
    "flagged-text.castkeep.json": _crafted_export(_every_reference("flagged", "no")),
    "sha256-short.castkeep.json": _crafted_export(_every_reference("sha256", "abc")),
    "report-list.castkeep.json": _crafted_export(_every_reference("quality_report", [1, 2])),
    "source-path-number.castkeep.json": _crafted_export(_every_reference("source_path", 7)),
    # item 4
    "pose-text.castkeep.json": _crafted_export(_every_reference("pose", {"yaw": "left"})),
    "pose-list.castkeep.json": _crafted_export(_every_reference("pose", [1, 2])),
    "noface-pairs.txt": _pairs_of("noface.png", ["noface.png noface.png 1", "noface.png noface.png 0"] * 2),
    "one-each-pairs.txt": _pairs_of("noface.png", ["noface.png noface.png 1", "noface.png noface.png 0"]),
    "existing.png": _image(8, 8),
    "evil\x1b[2J\x1b]0;title\x07.png": _image(320, 240),
    "run": lambda path, _: path.mkdir(),
    "fifo.castkeep.json": lambda path, _: os.mkfifo(path),
    "huge.jpg": _padded_photo(2 << 30),
    "models-root": lambda path, _: path.mkdir(),
    "home": lambda path, _: path.mkdir(),
}


@dataclass
class Case:
    argv: Callable[[Hostile], list[str]]
    code: int
    needle: str = ""                       # must appear in the error line
    env: Callable[[Hostile], dict[str, str]] | None = None


def _store(h: Hostile) -> list[str]:
    return ["--store", str(h.store)]


# Every image command (issue 13, item 8): SCRFD's resize asserted on a side that scales to 0 pixels.
IMAGE_COMMANDS: dict[str, Callable[[Hostile, Path], list[str]]] = {
    "analyze": lambda h, image: ["analyze", str(image)],
    "analyze-no-dense": lambda h, image: ["analyze", "--no-dense", str(image)],
    "compare": lambda h, image: ["compare", str(image), str(h.photo)],
    "register": lambda h, image: ["register", "Newcomer", str(image), *_store(h)],
    "add-refs": lambda h, image: ["add-refs", "Mara", str(image), *_store(h)],
    "identify": lambda h, image: ["identify", str(image), *_store(h)],
    "score": lambda h, image: ["score", str(image), "--character", "Mara", *_store(h)],
}

CASES: dict[str, Case] = {
    **{f"item8-{command}-{name}": Case(lambda h, c=command, n=name: IMAGE_COMMANDS[c](h, h.file(n)), 4, "no face")
       for command in IMAGE_COMMANDS for name in ("wide-640x2.png", "wide-20000x20.png")},
    "item8-analyze-tall-2x640": Case(lambda h: ["analyze", str(h.file("tall-2x640.png"))], 4, "no face"),
    # item 5
    **{f"item5-lock-timeout-{label}": Case(lambda h: ["list", *_store(h)], 7, "CASTKEEP_LOCK_TIMEOUT",
                                           env=lambda h, v=value: {"CASTKEEP_LOCK_TIMEOUT": v})
       for label, value in (("word", "soon"), ("negative", "-1"), ("nan", "nan"))},
    # item 6
    "item6-import-dev-zero": Case(lambda h: ["import", "/dev/zero", *_store(h)], 7, "device"),
    "item6-import-fifo": Case(lambda h: ["import", str(h.file("fifo.castkeep.json")), *_store(h)], 7, "FIFO"),
    **{f"item6-{command}-huge-file": Case(lambda h, c=command: IMAGE_COMMANDS[c](h, h.file("huge.jpg")), 3,
                                          "file too large")
       for command in ("register", "add-refs", "analyze")},
    # item 9
    "item9-corrupt-landmarker": Case(lambda h: ["analyze", str(h.photo)], 6, "face landmarker",
                                     env=lambda h: {"CASTKEEP_FACE_LANDMARKER": str(h.file("landmarker.task"))}),
    "item9-import-nested-array": Case(lambda h: ["import", str(h.file("nested.castkeep.json")), *_store(h)], 7,
                                      "nested too deeply"),
    "item9-import-nested-object": Case(lambda h: ["import", str(h.file("nested-object.castkeep.json")), *_store(h)],
                                       7, "nested too deeply"),
    "item9-import-references-ints": Case(lambda h: ["import", str(h.file("refs-ints.castkeep.json")), "--name", "X",
                                                    *_store(h)], 7, "malformed"),
    "item9-import-references-null": Case(lambda h: ["import", str(h.file("refs-none.castkeep.json")), "--name", "X",
                                                    *_store(h)], 7, "malformed"),
    "item9-bench-verify-nothing-scored": Case(lambda h: ["bench", "verify", "--pairs", str(h.file("noface-pairs.txt")),
                                                         "--no-baseline", "--out", str(h.folder / "bench")], 16,
                                              "no pair could be scored"),
    "item9-bench-verify-one-pair-each": Case(lambda h: ["bench", "verify", "--pairs",
                                                        str(h.file("one-each-pairs.txt")), "--no-baseline",
                                                        "--out", str(h.folder / "bench")], 16, "at least 2"),
    **{f"item9-bench-store-sizes-{size}": Case(lambda h, s=size: ["bench", "store", "--sizes", s, "--out",
                                                                  str(h.folder / "bench")], 16, "whole number")
       for size in ("inf", "-inf", "nan")},
    "item9-draw-no-extension": Case(lambda h: ["analyze", str(h.photo), "--draw", str(h.folder / "drawing")], 2,
                                    "image extension"),
    "item9-draw-unknown-extension": Case(lambda h: ["analyze", str(h.photo), "--draw", str(h.folder / "d.xyz")], 2,
                                         "image extension"),
    "item9-draw-several-to-a-file": Case(lambda h: ["analyze", str(h.photo), str(h.photo), "--draw",
                                                    str(h.file("existing.png"))], 2, "names a folder"),
    # item 13 (tests/landmarks/test_model_pack.py checks that nothing is created and no download tried)
    "item13-unknown-pack-name": Case(lambda h: ["analyze", str(h.photo), "--models", "no_such_pack"], 6,
                                     "model pack 'no_such_pack' not found (looked in",
                                     env=lambda h: {"CASTKEEP_MODELS": str(h.file("models-root")),
                                                    "HOME": str(h.file("home"))}),
    # items 3 and 4: a crafted import that would commit and break later reads is refused before the transaction
    **{f"item{item}-import-{stem}": Case(lambda h, s=stem: ["import", str(h.file(f"{s}.castkeep.json")), "--name", "X",
                                                           *_store(h)], 7, needle)
       for item, stem, needle in (
           (3, "dim256", "256-value embeddings"), (3, "not-unit", "not unit length"),
           (3, "65-refs", "65 references (at most 64)"), (3, "same-photo-twice", "same photo"),
           (3, "long-tag", "too long"), (3, "many-tags", "at most 64 texts"), (3, "long-description", "description is too long"),
           (3, "crop-undecodable", "does not decode"), (3, "crop-kps-outside", "keypoints are malformed"),
           (3, "quality-nan", "quality is not a finite number"), (3, "det-score-text", "detection score"),
           (3, "bbox-text", "bbox"), (3, "face-index-negative", "face index"), (3, "flagged-text", "'flagged'"),
           (3, "sha256-short", "sha256"), (3, "report-list", "quality report"), (3, "source-path-number", "source path"),
           (4, "pose-text", "pose 'yaw' is not a finite number"), (4, "pose-list", "pose is not a JSON object"))},
    # item 15
    "item15-draw-over-the-input": Case(lambda h: ["analyze", str(h.photo), "--draw", str(h.photo)], 2,
                                       "overwrite"),
    # item 16
    **{f"item16-bench-{bench}-name-{label}": Case(lambda h, b=bench, n=name: [
        "bench", *BENCH_ARGS[b](h), "--name", n, "--out", str(h.folder / "bench" / "deep")], 16, "file name")
       for bench in ("store", "verify", "consistency") for label, name in (("up", "../../x"), ("absolute", "/tmp/x"))},
    **{f"item16-compare-threshold-{value}": Case(lambda h, v=value: ["compare", str(h.photo), str(h.photo),
                                                                     "--threshold", v], 2, "finite")
       for value in ("nan", "inf")},
    "item16-consistency-threshold-nan": Case(lambda h: ["bench", "consistency", str(h.file("run")), "--threshold",
                                                        "nan"], 2, "finite"),
    # item 19
    "item19-symlink-loop": Case(lambda h: ["analyze", str(h.file("loop.jpg"))], 3, "symbolic link loop"),
    "item19-fifo": Case(lambda h: ["analyze", str(h.file("fifo.jpg"))], 3, "FIFO"),
    "item19-fifo-register": Case(lambda h: ["register", "Newcomer", str(h.file("fifo.jpg")), *_store(h)], 3, "FIFO"),
    "item19-device": Case(lambda h: ["analyze", os.devnull], 3, "device"),
    "item19-photo-n-out-of-range": Case(lambda h: ["score", f"{h.photo}:999", "--character", "Mara", *_store(h)], 5,
                                        "':999'"),
    "item19-photo-n-out-of-range-add-refs": Case(lambda h: ["add-refs", "Mara", f"{h.photo}:999", *_store(h)], 5,
                                                 "':999'"),
    # item 20
    "item20-name-of-combining-marks": Case(lambda h: ["register", "\u0301\u0302\u0303", str(h.photo), *_store(h)], 9,
                                           "combining mark"),
    "item20-name-without-letters": Case(lambda h: ["register", "'-_", str(h.photo), *_store(h)], 9, "no letter"),
    # known hostile files, kept in the table so that they stay refused without touching the store
    **{f"broken-{kind}-{command}": Case(lambda h, k=kind, c=command: IMAGE_COMMANDS[c](h, h.file(f"{k}.jpg")), 3)
       for kind in ("empty", "text", "truncated") for command in ("register", "add-refs", "identify")},
    "unknown-character": Case(lambda h: ["show", "Nobody", *_store(h)], 8),
}

BENCH_ARGS: dict[str, Callable[[Hostile], list[str]]] = {
    "store": lambda h: ["store", "--sizes", "10", "--kinds", "exact"],
    "verify": lambda h: ["verify", "--pairs", str(h.file("noface-pairs.txt")), "--no-baseline"],
    "consistency": lambda h: ["consistency", str(h.file("run"))],
}


def store_digest(store: Path) -> str:
    """The store's logical content: every row of its database (not the index cache, which reads may rebuild)."""
    with sqlite3.connect(f"file:{store / 'castkeep.sqlite3'}?mode=ro", uri=True) as db:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, faces_dir, fast_analyzer) -> Hostile:
    from castkeep.identity.store import Store

    folder = tmp_path_factory.mktemp("hostile")
    store = folder / "store"
    mara = _photos(faces_dir, 10)
    with Store.open(store, analyzer=fast_analyzer, create=True) as opened:
        opened.register("Mara", [str(p) for p in mara[:2]], description=EVIL_DESCRIPTION, tags=[EVIL_TAG])
        export = opened.export("Mara", folder / "mara.castkeep.json")
    return Hostile(store=store, folder=folder, photo=mara[2], export=export)


def assert_one_error_line(result, code: int, needle: str = "") -> str:
    assert result.returncode not in (0, 1, 70), (result.returncode, result.stderr)
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if code != 2:  # click's usage errors add "Usage:" and "Try ..." lines around their one "Error:" line
        assert len(lines) == 1, result.stderr
    assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case_id", list(CASES))
def test_hostile_input_is_refused_cleanly(case_id, hostile, invoke):
    case = CASES[case_id]
    before = store_digest(hostile.store)
    result = invoke(*case.argv(hostile), env=case.env(hostile) if case.env else None)
    assert_one_error_line(result, case.code, case.needle)
    assert store_digest(hostile.store) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads through any permission; an unreadable folder needs an ordinary user")
def test_photo_in_a_folder_that_may_not_be_entered(hostile, invoke, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    photo = locked / "photo.jpg"
    photo.write_bytes(hostile.photo.read_bytes())
    locked.chmod(0)
    try:
        for argv in (["analyze", str(photo)], ["register", "Newcomer", str(photo), *_store(hostile)]):
            assert_one_error_line(invoke(*argv), 3, "permission denied")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_show_and_list_escape_terminal_controls(hostile, invoke):
    """Item 10: stored strings cannot drive the terminal or forge lines; --json keeps the exact strings."""
    shown = invoke("show", "Mara", *_store(hostile))
    listed = invoke("list", *_store(hostile))
    for result in (shown, listed):
        assert result.returncode == 0, result.stderr
        assert not any(char in result.stdout for char in "\x1b\x07\x9b\u202e"), result.stdout
        assert "cast\\x1b[31mred" in result.stdout
    assert "description: lead\\x1b]0;pwned\\x07\\x1b[2J\\nproblem: store corrupt\\x9b31m \\u202eevil" in shown.stdout
    assert not any(line.startswith("problem:") for line in shown.stdout.splitlines())
    data = json.loads(invoke("show", "Mara", *_store(hostile), "--json").stdout)
    assert data["description"] == EVIL_DESCRIPTION and data["tags"] == [EVIL_TAG]
    raw_json = invoke("list", *_store(hostile), "--json").stdout
    assert not any(char in raw_json for char in "\x1b\x9b\u202e") and json.loads(raw_json)[0]["tags"] == [EVIL_TAG]


def test_error_lines_escape_file_names(hostile, invoke):
    image = hostile.file("evil\x1b[2J\x1b]0;title\x07.png")
    line = assert_one_error_line(invoke("analyze", str(image)), 4, "no face")
    assert "\x1b" not in line and "\x07" not in line and "evil\\x1b[2J\\x1b]0;title\\x07.png" in line


def test_drawings_never_overwrite_inputs_or_each_other(hostile, invoke, tmp_path):
    """Item 15 (and item 9's folder case): two inputs with one stem get two drawings; a drawing whose name
    would be an input's goes beside it; an existing folder as --draw of one image gets a PNG inside."""
    first, second = tmp_path / "a" / "face.png", tmp_path / "b" / "face.png"
    for path in (first, second):
        path.parent.mkdir()
        Image.open(hostile.photo).save(path)
    before = {path: path.read_bytes() for path in (first, second)}
    result = invoke("analyze", "--no-dense", str(first), str(second), "--draw", str(first.parent), "--json")
    assert result.returncode == 0, result.stderr
    drawings = [Path(image["drawing"]) for image in json.loads(result.stdout)["images"]]
    assert drawings == [first.parent / "face-2.png", first.parent / "face-3.png"]
    assert all(path.read_bytes() == data for path, data in before.items())
    assert all(Image.open(path).size == Image.open(first).size for path in drawings)

    folder = tmp_path / "drawings"
    folder.mkdir()
    result = invoke("analyze", "--no-dense", str(hostile.photo), "--draw", str(folder))
    assert result.returncode == 0, result.stderr
    assert (folder / f"{hostile.photo.stem}.png").is_file()


def test_register_a_photo_whose_name_is_not_utf8(hostile, invoke, tmp_path):
    """Item 9: the name is stored with its odd bytes escaped (SQLite and JSON take only valid text)."""
    folder = os.fsencode(tmp_path)
    photo = os.fsdecode(folder + b"/caf\xe9-\xff.jpg")
    Path(photo).write_bytes(hostile.photo.read_bytes())
    store = str(tmp_path / "store")
    result = invoke("register", "Odd", photo, "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    [reference] = json.loads(invoke("show", "Odd", "--store", store, "--json").stdout)["reference_details"]
    assert reference["source_path"].endswith("caf\\xe9-\\xff.jpg")
    assert invoke("verify", "--store", store).returncode == 0


def test_bench_consistency_tells_unreadable_outputs_from_faceless_ones(hostile, invoke, tmp_path):
    """Item 19: a corrupt output is "could not read", not "no face found"."""
    run = tmp_path / "run"
    run.mkdir()
    for index in range(2):
        (run / f"out_{index}.jpg").write_bytes(hostile.photo.read_bytes())
    (run / "corrupt.png").write_text("not a picture")
    Image.new("RGB", (320, 240), (90, 140, 200)).save(run / "blank.png")
    result = invoke("bench", "consistency", str(run), "--reference", str(hostile.photo), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["image"] for r in data["no_face"]] == ["blank.png"]
    assert [r["image"] for r in data["unreadable"]] == ["corrupt.png"]
    assert "not an image" in data["unreadable"][0]["reason"] and data["outputs"] == 4


class WriteLockHolder:
    """Another writer holding the store's write lock (castkeep's own transaction, so it leaves the lock-owner
    note) in a thread, until the `with` block ends or `hold_s` seconds pass: a command that waits for it past its bound
    returns only then, and the test sees the wait."""

    def __init__(self, store: Path, hold_s: float = 20.0) -> None:
        import threading

        self._store, self._hold_s = store, hold_s
        self._released, self._holding = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        from castkeep.identity.database import DB_NAME, Database

        db = Database.connect(self._store / DB_NAME)
        try:
            with db.write():
                self._holding.set()
                self._released.wait(self._hold_s)
        finally:
            db.close()

    def __enter__(self) -> WriteLockHolder:
        self._thread.start()
        assert self._holding.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._thread.join()


def test_a_change_waits_for_the_write_lock_a_bounded_time_and_names_its_holder(hostile, invoke):
    """Item 5: register behind another writer gives up after CASTKEEP_LOCK_TIMEOUT seconds, naming the holder."""
    import time

    before = store_digest(hostile.store)
    with WriteLockHolder(hostile.store):
        started = time.monotonic()
        result = invoke("register", "Newcomer", str(hostile.photo), *_store(hostile),
                        env={"CASTKEEP_LOCK_TIMEOUT": "0.5"})
        waited = time.monotonic() - started
    line = assert_one_error_line(result, 7, "store is busy")
    assert f"pid {os.getpid()} on" in line and "CASTKEEP_LOCK_TIMEOUT" in line
    assert waited < 15, waited
    assert store_digest(hostile.store) == before


def test_identify_with_a_stale_index_cache_does_not_wait_for_the_write_lock(hostile, invoke):
    """Item 5: a query rebuilds a missing or stale index from the database without taking the write lock."""
    import time

    (hostile.store / "index.faiss").unlink(missing_ok=True)
    with WriteLockHolder(hostile.store):
        started = time.monotonic()
        result = invoke("identify", str(hostile.photo), *_store(hostile), "--json")
        waited = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["name"] == "Mara"
    assert waited < 15, waited


def test_reference_photos_are_hashed_without_reading_them_into_memory(hostile, fast_analyzer, tmp_path):
    """Item 6: a large reference file (under the image size limit) is hashed in chunks, not read whole."""
    import tracemalloc

    from castkeep.identity.enrolment import reference_candidates
    from castkeep.utils import file_sha256

    photo = tmp_path / "padded.jpg"
    _padded_photo(300 << 20)(photo, hostile)
    tracemalloc.start()
    try:
        [reference] = reference_candidates(fast_analyzer, str(photo))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reference.sha256 == file_sha256(photo)
    assert peak < 100 << 20, f"{peak / 2**20:.0f} MiB held while registering a 300 MiB file"


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """`chattr +i`: not even root may write, create or delete there (what a read-only mount does to a store)."""
    import shutil
    import subprocess

    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done: list[Path] = []
    try:
        for path in paths:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                pytest.skip("chattr +i is not permitted here (file system or capabilities)")
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_store_answers_every_read_command_and_refuses_changes(hostile, invoke, tmp_path):
    """Item 11: a store nobody may write (here `chattr +i` on its folder and database) is opened read-only."""


def test_a_name_of_64_four_byte_letters_exports_to_a_folder(hostile, invoke, tmp_path):
    """Item 17: `<name>.castkeep.json` would be 270 bytes, over the 255 a file name may have: the name is cut
    and a hash of the whole name keeps two such names apart; the file imports under its full name."""
    store, out = str(tmp_path / "store"), tmp_path / "out"
    out.mkdir()
    names = ["\U00020000" * 64, "\U00020000" * 63 + "\U00020001"]  # CJK letters, 4 bytes each in UTF-8
    files = []
    for name in names:
        assert invoke("register", name, str(hostile.photo), "--store", store, "--force").returncode == 0
        result = invoke("export", name, str(out), "--store", store, "--json")
        assert result.returncode == 0, result.stderr
        files.append(Path(json.loads(result.stdout)["file"]))
    assert len(set(files)) == 2 and all(f.parent == out and len(os.fsencode(f.name)) <= 255 for f in files)
    assert all(f.name.endswith(".castkeep.json") and f.name.startswith("\U00020000" * 55) for f in files)
    result = invoke("import", str(files[1]), "--store", str(tmp_path / "other"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == names[1]


def test_successful_commands_print_nothing_unexpected_on_stderr(hostile, cli, tmp_path):
    """Item 18, through real processes (library output written by C++ or at import time bypasses `invoke`):
    FAISS's "please provide at least 39 training points" on every IVF build of a small store, and numpy's and
    matplotlib's RuntimeWarnings (here from the histogram of a one-output run, which also crashed)."""
    store = tmp_path / "store"
    import shutil

    shutil.copytree(hostile.store, store)
    for argv in (["verify", "--index", "ivf", "--store", str(store)],
                 ["identify", str(hostile.photo), "--store", str(store)],
                 ["bench", "store", "--sizes", "20", "--kinds", "ivf", "--queries", "5", "--out", str(tmp_path / "b")]):
        result = cli(*argv)
        assert result.returncode == 0 and result.stderr == "", (argv, result.stderr)
    run = tmp_path / "run"
    run.mkdir()
    (run / "out_0.jpg").write_bytes(hostile.photo.read_bytes())
    result = cli("bench", "consistency", str(run), "--out", str(tmp_path / "c"))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_an_offline_base_model_is_one_error_line(hostile, cli, tmp_path):
    """Item 18: diffusers' "Couldn't connect to the Hub ... Will try to load from local cache." (two lines,
    without HF_HUB_OFFLINE) no longer comes before castkeep's own error."""
    result = cli("generate", "Mara", "x", "--base-model", "castkeep-test/not-cached", "--ip-adapter",
                 str(tmp_path / "ip-adapter-faceid_sd15.bin"), "--store", str(hostile.store), "--out",
                 str(tmp_path / "out"), env={"HF_HUB_OFFLINE": None, "HF_HUB_DISABLE_TELEMETRY": "1"})
    *progress_lines, line = result.stderr.strip().splitlines()
    assert result.returncode == 6 and line.startswith("error: base model 'castkeep-test/not-cached'"), result.stderr
    assert [text.startswith("loading ") for text in progress_lines] == [True], result.stderr


# Rows damaged outside castkeep (items 3 and 4): (SQL, what `verify` says, exit codes of list and show). Every
# command either works, or says what is damaged in one line (exit 7); verify names the problem; never exit 70.
DAMAGE: dict[str, tuple[str, str, int, int]] = {
    "tags-not-json": ("UPDATE characters SET tags = '[oops'", "tags is not valid JSON", 7, 7),
    "tags-not-a-list": ("UPDATE characters SET tags = '{\"a\": 1}'", "tags is not a JSON list", 7, 7),
    "baseline-null": ("UPDATE characters SET baseline = 'null'", "baseline is not a JSON object", 7, 7),
    "space-baseline-null": ("UPDATE character_vectors SET baseline = 'null'", "baseline is not a JSON object", 7, 7),
    "pose-not-json": ("UPDATE refs SET pose = '{bad'", "pose is not valid JSON", 7, 7),
    "pose-text-yaw": ("UPDATE refs SET pose = '{\"yaw\": \"left\"}'", "pose 'yaw' is not a finite number", 7, 7),
    "bbox-null": ("UPDATE refs SET bbox = 'null'", "bbox is not a JSON list", 7, 7),
    "quality-text": ("UPDATE refs SET quality = 'high'", "quality is not a finite number", 7, 7),
    "vector-5-bytes": ("UPDATE characters SET vector = x'0102030405'", "5-byte blob", 7, 7),
    "embedding-5-bytes": ("UPDATE ref_embeddings SET vector = x'0102030405'", "5-byte blob", 7, 7),
    "space-vector-text": ("UPDATE character_vectors SET vector = 'abc'", "str value", 7, 7),
    "crop-keypoints-not-json": ("UPDATE refs SET crop_kps = '{'", "keypoints", 0, 0),
    "unknown-index-kind": ("INSERT OR REPLACE INTO meta VALUES ('index_kind', 'weird')", "unknown index kind", 0, 0),
    "fingerprint-deleted": ("DELETE FROM meta WHERE key = 'fingerprint'", "fingerprint", 0, 0),
    "generation-not-a-number": ("UPDATE meta SET value = 'many' WHERE key = 'generation'", "change counter", 0, 0),
    "index-generation-not-a-number": ("INSERT OR REPLACE INTO meta VALUES ('index_generation', 'x');"
                                      "UPDATE meta SET value = 'x' WHERE key = 'generation'", "change counter", 0, 0),
    # item 3: a character of another embedding size that got in anyway (consistent in itself)
    "256-values": (";".join(f"UPDATE {table} SET {column} = substr({column}, 1, 1024)" for table, column in (
        ("characters", "vector"), ("character_vectors", "vector"), ("refs", "embedding"), ("ref_embeddings", "vector")))
        + "; UPDATE characters SET dim = 256; UPDATE character_vectors SET dim = 256; UPDATE ref_embeddings SET dim = 256",
        "256-value vector; the store's model gives 512", 0, 0),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_rows_are_reported_not_crashed(damage, hostile, invoke, tmp_path):
    import shutil

    sql, problem, list_code, show_code = DAMAGE[damage]
    store = tmp_path / "store"
    shutil.copytree(hostile.store, store)
    with sqlite3.connect(store / "castkeep.sqlite3") as db:
        db.executescript(sql)
    for argv, code in ((["list"], list_code), (["show", "Mara"], show_code)):
        result = invoke(*argv, *_store(Hostile(store, hostile.folder, hostile.photo, hostile.export)))
        if code:
            assert_one_error_line(result, code, "damaged")
        else:
            assert result.returncode == 0, result.stderr
    verified = invoke("verify", "--store", str(store))
    assert_one_error_line(verified, 7, "integrity check failed")
    assert any(line.startswith("problem:") and problem in line for line in verified.stdout.splitlines()), verified.stdout
    # A damaged character can still be removed (its rows are not decoded for that).
    removed = invoke("remove", "Mara", "--store", str(store))
    assert removed.returncode == 0, removed.stderr


def test_a_store_that_lost_its_model_record_says_so(hostile, invoke, tmp_path):
    """Item 4: not "no characters stored" (nor a registration that records another model)."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(hostile.store, store)
    (store / "index.faiss").unlink(missing_ok=True)  # a stale cache: rebuilt in memory only
    before = sorted(p.name for p in store.iterdir())
    argv = ["--store", str(store)]
    with immutable(store / "castkeep.sqlite3", store):
        for read in (["list"], ["show", "Mara"], ["identify", str(hostile.photo)],
                     ["score", str(hostile.photo), "--character", "Mara"], ["export", "Mara", str(tmp_path / "out")],
                     ["verify"]):
            result = invoke(*read, *argv)
            assert result.returncode == 0, (read, result.stderr)
        assert "Mara" in invoke("identify", str(hostile.photo), *argv, "--json").stdout
        for change in (["remove", "Mara"], ["register", "Newcomer", str(hostile.photo)],
                       ["add-refs", "Mara", str(hostile.photo)], ["import", str(hostile.export), "--name", "Copy"],
                       ["verify", "--index", "hnsw"]):
            assert_one_error_line(invoke(*change, *argv), 7, "store is read-only")
    assert sorted(p.name for p in store.iterdir()) == before
    assert store_digest(store) == store_digest(hostile.store)


    with sqlite3.connect(store / "castkeep.sqlite3") as db:
        db.execute("DELETE FROM meta WHERE key = 'fingerprint'")
    before = store_digest(store)
    for argv in (["identify", str(hostile.photo)], ["register", "Newcomer", str(hostile.photo)],
                 ["import", str(hostile.export), "--name", "Copy"]):
        assert_one_error_line(invoke(*argv, "--store", str(store)), 7, "fingerprint")
    assert store_digest(store) == before


@pytest.mark.slow
def test_a_damaged_change_counter_is_survived_and_repaired(hostile, invoke, tmp_path):
    """A non-numeric meta 'generation' (and index record) used to end every command in exit 70: queries
    now rebuild the index, the next change repairs the counter, and verify is clean again."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(hostile.store, store)
    with sqlite3.connect(store / "castkeep.sqlite3") as db:
        db.executescript("UPDATE meta SET value = 'many' WHERE key = 'generation';"
                         "INSERT OR REPLACE INTO meta VALUES ('index_generation', 'x')")
    argv = ["--store", str(store)]
    assert "Mara" in invoke("identify", str(hostile.photo), *argv, "--json").stdout
    assert invoke("register", "Second", str(hostile.photo), *argv, "--force").returncode == 0
    verified = invoke("verify", *argv)
    assert verified.returncode == 0 and "change counter" not in verified.stdout, verified.stdout + verified.stderr
    with sqlite3.connect(store / "castkeep.sqlite3") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0].isdigit()
