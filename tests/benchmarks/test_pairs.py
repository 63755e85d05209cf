"""Reading pairs files: both formats, root guessing, bad lines reported, balanced slices."""

from __future__ import annotations

from pathlib import Path

import pytest

from castkeep.benchmarks.pairs import read_pairs
from castkeep.errors import BenchmarkInputError


def test_shared_lfw_pairs_resolve_against_the_faces_folder(faces_dir):
    pairs = read_pairs(faces_dir / "lfw_pairs_fold1" / "pairs.txt")
    assert pairs.root == faces_dir
    assert len(pairs.pairs) == 600 and sum(p.same for p in pairs.pairs) == 300
    assert not pairs.skipped
    assert all(p.a.is_file() and p.b.is_file() for p in pairs.pairs)


def test_official_lfw_format(faces_dir):
    pairs = read_pairs(faces_dir / "lfw_pairs_fold1" / "official_pairs_view2_all_folds.txt")
    assert len(pairs.pairs) == 6000
    first = pairs.pairs[0]
    assert first.same and first.a.name == "Abel_Pacheco_0001.jpg" and first.b.name == "Abel_Pacheco_0004.jpg"
    assert first.a.is_file()
    assert any(not p.same and p.a.parent.name != p.b.parent.name for p in pairs.pairs)


def test_bad_lines_are_reported_not_fatal(tmp_path: Path):
    (tmp_path / "x").mkdir()
    text = "# comment\n\nx/a.jpg x/b.jpg 1\nx/a.jpg x/c.jpg maybe\nonly two\nx/a.jpg x/d.jpg 0\n"
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    pairs = read_pairs(path, tmp_path)
    assert [p.same for p in pairs.pairs] == [True, False]
    assert [s["line"] for s in pairs.skipped] == [4, 5]
    assert pairs.pairs[0].a == tmp_path / "x" / "a.jpg"
    assert pairs.images == [tmp_path / "x" / n for n in ("a.jpg", "b.jpg", "d.jpg")]


def test_limit_keeps_both_kinds(faces_dir):
    pairs = read_pairs(faces_dir / "lfw_pairs_fold1" / "pairs.txt", limit=10)
    assert len(pairs.pairs) == 10 and sum(p.same for p in pairs.pairs) == 5


@pytest.mark.parametrize("text", ["", "garbage line here too\n", "a b 1\nc d 1\n"])
def test_unusable_files_raise(tmp_path: Path, text: str):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(BenchmarkInputError):
        read_pairs(path, tmp_path)


def test_missing_file_raises(tmp_path: Path):
    with pytest.raises(BenchmarkInputError, match="not found"):
        read_pairs(tmp_path / "nope.txt")
