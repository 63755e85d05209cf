"""Every error class has one exit code, no two classes share one, and the README's table says the truth."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from castkeep import errors

README = Path(__file__).resolve().parent.parent / "README.md"


def error_classes() -> dict[str, type[errors.CastkeepError]]:
    return {name: cls for name, cls in vars(errors).items()
            if inspect.isclass(cls) and issubclass(cls, errors.CastkeepError)}


def readme_table() -> dict[str, int]:
    """`| 7 | `StoreError` | ... |` rows of the README's exit-code table → {class name: code}."""
    codes = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*(\d+)\s*\|(.*?)\|", line)
        if match:
            for name in re.findall(r"`(\w+Error)`", match[2]):
                codes[name] = int(match[1])
    return codes


def test_each_class_has_its_own_code_apart_from_click_and_internal_ones():
    codes = {name: cls.exit_code for name, cls in error_classes().items()}
    shared = {"MultipleFacesError", "FaceIndexError"}  # both "which face" problems
    distinct = [code for name, code in codes.items() if name not in shared]
    assert len(distinct) == len(set(distinct))
    assert codes["MultipleFacesError"] == codes["FaceIndexError"]
    assert not {2, 70, 130} & set(codes.values())


def test_readme_lists_every_error_class_with_its_code():
    documented = readme_table()
    actual = {name: cls.exit_code for name, cls in error_classes().items()}
    assert documented == actual


def test_no_error_class_is_defined_outside_errors_py():
    root = README.parent
    stray = []
    for path in root.rglob("*.py"):
        first = path.relative_to(root).parts[0]
        if first in {"tests", "build"} or first.startswith(".") or path.name == "errors.py":
            continue
        stray += [f"{path.relative_to(root)}: {m}" for m in
                  re.findall(r"^class (\w+)\((?:\w+Error|CastkeepError)\)", path.read_text(encoding="utf-8"), re.M)]
    assert stray == []
