"""Reading verification pairs files.

Two formats, detected per line:
- `a_path b_path same` (same = 1/0, also true/false, same/diff): paths relative to the root;
- LFW's own `pairs.txt`: `name n1 n2` (genuine) and `name1 n1 name2 n2` (impostor), meaning
  `<root>/<name>/<name>_<nnnn>.jpg`; a leading `folds pairs_per_fold` header line is skipped.
Blank lines and `#` comments are ignored. Lines that parse as neither are reported, not dropped
silently; a file with no usable pair is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BenchmarkInputError

TRUE_WORDS = {"1", "true", "same", "yes", "genuine"}
FALSE_WORDS = {"0", "false", "diff", "different", "no", "impostor"}


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool
    line: int


@dataclass
class PairsFile:
    path: Path
    root: Path
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)  # {"line", "text", "reason"}

    @property
    def images(self) -> list[Path]:
        """Every distinct image, in first-seen order (each is embedded once)."""
        return list(dict.fromkeys(p for pair in self.pairs for p in (pair.a, pair.b)))


def _is_int(token: str) -> bool:
    return token.isdigit()


def _lfw_path(root: Path, name: str, number: str) -> Path:
    return root / name / f"{name}_{int(number):04d}.jpg"


def _parse_line(tokens: list[str], root: Path) -> tuple[Path, Path, bool]:
    if len(tokens) == 3 and _is_int(tokens[1]) and _is_int(tokens[2]):
        return _lfw_path(root, tokens[0], tokens[1]), _lfw_path(root, tokens[0], tokens[2]), True
    if len(tokens) == 4 and _is_int(tokens[1]) and _is_int(tokens[3]):
        return _lfw_path(root, tokens[0], tokens[1]), _lfw_path(root, tokens[2], tokens[3]), False
    if len(tokens) == 3:
        word = tokens[2].lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return root / tokens[0], root / tokens[1], word in TRUE_WORDS
        raise ValueError(f"third field '{tokens[2]}' is not a same/different label (1 or 0)")
    raise ValueError(f"expected 'a b same' or LFW 'name n1 n2' / 'name1 n1 name2 n2', got {len(tokens)} fields")


def _guess_root(path: Path, lines: list[str]) -> Path:
    """Where relative paths start when --root is not given: the pairs file's folder or its parent
    (the shared photo sets list paths relative to the folder above the set)."""
    candidates = [path.parent, path.parent.parent]
    for line in lines:
        tokens = line.split()
        if not tokens or tokens[0].startswith("#") or (len(tokens) == 2 and all(map(_is_int, tokens))):
            continue
        for root in candidates:
            try:
                a, b, _ = _parse_line(tokens, root)
            except ValueError:
                break
            if a.exists():
                return root
        break
    return candidates[0]


def read_pairs(path: str | os.PathLike, root: str | os.PathLike | None = None, *,
               limit: int | None = None) -> PairsFile:
    """Parse a pairs file. `limit` keeps a balanced slice: the first limit/2 genuine and impostor
    pairs (a quick run that still has both kinds)."""
    path = Path(path)
    if not path.is_file():  # never opened otherwise: a FIFO or a device would hang or never end
        raise BenchmarkInputError("pairs file not found" if not path.exists() else "is not a regular file",
                                  path=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchmarkInputError(f"cannot read pairs file ({exc})", path=path) from None
    root_path = Path(root) if root is not None else _guess_root(path, lines)
    if not root_path.is_dir():
        raise BenchmarkInputError("--root is not a folder", path=root_path)
    result = PairsFile(path=path, root=root_path)
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if number == 1 and len(tokens) == 2 and all(map(_is_int, tokens)):
            continue  # LFW header: folds, pairs per fold
        try:
            a, b, same = _parse_line(tokens, root_path)
        except ValueError as exc:
            result.skipped.append({"line": number, "text": line.strip()[:200], "reason": str(exc)})
            continue
        result.pairs.append(Pair(a=a, b=b, same=same, line=number))
    if limit:
        half = max(1, limit // 2)
        genuine = [p for p in result.pairs if p.same][:half]
        impostor = [p for p in result.pairs if not p.same][:limit - len(genuine[:half])]
        keep = {id(p) for p in genuine + impostor}
        result.pairs = [p for p in result.pairs if id(p) in keep]
    if not result.pairs:
        raise BenchmarkInputError(f"no usable pairs ({len(result.skipped)} unreadable line(s))", path=path)
    if not any(p.same for p in result.pairs) or all(p.same for p in result.pairs):
        raise BenchmarkInputError("pairs file needs both same (1) and different (0) pairs", path=path)
    return result
