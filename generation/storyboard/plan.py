"""A storyboard plan: the shots of a series, read from TOML or YAML and checked before anything loads.

    title = "Night market"          # optional: the report's heading
    seed = 7                        # optional: base of every shot's derived seed (default 0)
    [defaults]                      # any shot field; a shot overrides them
    negative = "blurry, lowres"
    steps = 30
    best_of = 2
    [[shots]]
    id = "p01-arrival"              # optional: file names and the ledger's key (default shot-001, ...)
    prompt = "Mara walks into the night market, wide shot"
    characters = ["Mara"]

Every mistake is one `PlanError` naming the shot (its number in the file and its id) and the field, so
`shot 3 (p03-stall): steps: must be an integer of at least 1, not 0` — before any model loads.
A shot's seed is its own `seed`, else derived from the plan's base seed and the shot's id (never from
the clock or the run order), so inserting or reordering shots leaves the others' pixels alone.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import CastkeepError, PlanError
from ...identity.scorers import SCORERS
from ...utils import IMAGE_SUFFIXES
from ..config import MAX_SEED, GenerationConfig
from ..schedulers import SCHEDULER_NAMES

PLAN_SUFFIXES = (".toml", ".yaml", ".yml")
MAX_PLAN_BYTES = 16 << 20
MAX_SHOTS = 10_000
EXAMPLE_PLAN = Path(__file__).with_name("example.toml")

# Named regions as (left, top, right, bottom) fractions of the image.
NAMED_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "full": (0.0, 0.0, 1.0, 1.0),
    "left": (0.0, 0.0, 0.5, 1.0), "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5), "bottom": (0.0, 0.5, 1.0, 1.0),
    "left-third": (0.0, 0.0, 1 / 3, 1.0), "middle-third": (1 / 3, 0.0, 2 / 3, 1.0),
    "right-third": (2 / 3, 0.0, 1.0, 1.0),
}
_SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _FieldError(Exception):
    """A field's value is wrong; the caller adds which shot and which field."""


# ---------------------------------------------------------------------------------- field checks
def _integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(f"must be an integer, not {_shown(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise _FieldError(f"must be an integer {bounds}, not {value}")
        return value

    return check


def _number(minimum: float | None = None, maximum: float | None = None) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _FieldError(f"must be a number, not {_shown(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
            raise _FieldError(f"must be a number {bounds}, not {value:g}")
        return float(value)

    return check


def _text(*, required: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _FieldError(f"must be text, not {_shown(value)}")
        if required and not value.strip():
            raise _FieldError("is empty")
        return value

    return check


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise _FieldError(f"{_shown(value)} is not one of {', '.join(choices)}")
        return str(value)

    return check


def _aspect(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 3:2 as the base-60 number 182
        raise _FieldError(f"must be text such as \"3:2\" (quote it: YAML reads an unquoted 3:2 as {value})")
    return _text(required=True)(value)


def _characters(value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise _FieldError("must be a stored character's name or a non-empty list of names")
    lowered = [n.casefold() for n in names]
    if len(set(lowered)) != len(lowered):
        raise _FieldError(f"names a character twice ({', '.join(names)})")
    return tuple(names)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Per-shot fields (also allowed in [defaults]) → check. `regions` and `id` are handled on their own.
SHOT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "prompt": _text(required=True),
    "style": _text(),  # appended to every prompt: "comic book, ink and flat colour"
    "negative": _text(),
    "characters": _characters,
    "caption": _text(),  # the artist's note, shown in the report
    "seed": _integer(0, MAX_SEED),
    "aspect": _aspect,
    "width": _integer(8),
    "height": _integer(8),
    "steps": _integer(1, 1000),
    "guidance": _number(0, 50),
    "id_scale": _number(0, 5),
    "lora_scale": _number(0, 2),  # the FaceID LoRA's weight (generate's --lora-scale)
    "num_images": _integer(1, 64),
    "best_of": _integer(1, 256),
    "min_score": _number(0, 1),
    "max_tries": _integer(1, 1024),
    "scorer": _choice(SCORERS),
    "scheduler": _choice(SCHEDULER_NAMES),
}
_SIZE_FIELDS = {"aspect", "width", "height"}
PLAN_KEYS = ("title", "seed", "defaults", "shots")
SHOT_ONLY = ("id", "regions")
# The settings a shot passes to GenerationConfig, by their config names.
_CONFIG_NAMES = {"steps": "steps", "guidance": "guidance", "id_scale": "id_scale", "lora_scale": "lora_scale",
                 "width": "width",
                 "height": "height", "aspect": "aspect", "num_images": "num_images", "best_of": "best_of",
                 "min_score": "min_score", "max_tries": "max_tries", "scorer": "scorer", "scheduler": "scheduler"}


# ---------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Region:
    """Where one character stands: a box in fractions of the image, or a mask image (white = theirs)."""

    box: tuple[float, float, float, float] | None = None
    mask: Path | None = None
    label: str = "full"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "box": None if self.box is None else [round(v, 4) for v in self.box],
                "mask": None if self.mask is None else os.fspath(self.mask)}


@dataclass(frozen=True)
class Shot:
    number: int  # 1-based position in the plan file
    id: str
    prompt: str  # with the plan's style appended
    negative: str
    characters: tuple[str, ...]
    seed: int
    settings: dict[str, Any]  # GenerationConfig fields (steps, guidance, id_scale, size, selection, scorer)
    regions: dict[str, Region] = field(default_factory=dict)  # per character; empty for a one-character shot
    caption: str = ""

    @property
    def where(self) -> str:
        return f"shot {self.number} ({self.id})"

    def config(self, *, batch_size: int = 1) -> GenerationConfig:
        return GenerationConfig(prompt=self.prompt, negative_prompt=self.negative, seed=self.seed,
                                batch_size=batch_size, **self.settings)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "id": self.id, "prompt": self.prompt, "negative": self.negative,
                "characters": list(self.characters), "seed": self.seed, "settings": dict(self.settings),
                "regions": {name: region.to_dict() for name, region in self.regions.items()},
                "caption": self.caption}


@dataclass(frozen=True)
class Plan:
    path: Path | None
    title: str
    seed: int
    shots: tuple[Shot, ...]

    @property
    def characters(self) -> tuple[str, ...]:
        """Every character the plan names, in order of first appearance."""
        return tuple(dict.fromkeys(name for shot in self.shots for name in shot.characters))


def derived_seed(base: int, shot_id: str) -> int:
    """A shot's seed from the plan's base seed and its id: stable whatever the shot's position."""
    digest = hashlib.sha256(f"castkeep-storyboard/{base}/{shot_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (MAX_SEED + 1)


def _normalised_keys(table: dict[Any, Any], where: str) -> dict[str, Any]:
    """`id-scale` and `id_scale` alike; keys must be text."""
    result: dict[str, Any] = {}
    for key, value in table.items():
        if not isinstance(key, str):
            raise PlanError(f"{where}: field names must be text, not {_shown(key)}")
        result[key.strip().replace("-", "_")] = value
    return result


def _unknown_field(key: str, allowed: tuple[str, ...], where: str) -> PlanError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (fields: {', '.join(allowed)})"
    return PlanError(f"{where}: unknown field '{key}'{hint}")


def _check_fields(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in table.items():
        if key not in allowed:
            raise _unknown_field(key, allowed, where)
        if key in SHOT_FIELDS:
            try:
                checked[key] = SHOT_FIELDS[key](value)
            except _FieldError as exc:
                raise PlanError(f"{where}: {key}: {exc}") from None
        else:
            checked[key] = value
    return checked


def _region(value: Any, base_dir: Path) -> Region:
    if isinstance(value, str) and value.strip().lower() in NAMED_REGIONS:
        name = value.strip().lower()
        return Region(box=NAMED_REGIONS[name], label=name)
    if isinstance(value, str) and Path(value).suffix.lower() in IMAGE_SUFFIXES:
        mask = Path(value).expanduser()
        mask = mask if mask.is_absolute() else base_dir / mask
        if not mask.is_file():
            raise _FieldError(f"mask file not found: {value}")
        from PIL import Image

        try:
            with Image.open(mask) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError):  # PIL's ways of saying "not an image I can read"
            raise _FieldError(f"mask file is not a readable image: {value}") from None
        return Region(mask=mask, label=Path(value).name)
    if isinstance(value, list) and len(value) == 4:
        box = tuple(_number(0, 1)(v) for v in value)
        if box[0] >= box[2] or box[1] >= box[3]:
            raise _FieldError(f"box {value} must be [left, top, right, bottom] with left < right and top < bottom")
        return Region(box=(box[0], box[1], box[2], box[3]), label="box")
    raise _FieldError(f"{_shown(value)} is not a region: use {', '.join(NAMED_REGIONS)}, a box "
                      "[left, top, right, bottom] in fractions of the image, or a mask image file")


def _regions(value: Any, characters: tuple[str, ...], base_dir: Path, where: str) -> dict[str, Region]:
    """Each character's region; a multi-character shot without any splits the frame into equal vertical
    strips in the order the characters are listed (the first stands on the left)."""
    if value is None:
        if len(characters) == 1:
            return {}
        count = len(characters)
        return {name: Region(box=(i / count, 0.0, (i + 1) / count, 1.0), label=f"strip {i + 1}/{count}")
                for i, name in enumerate(characters)}
    if not isinstance(value, dict):
        raise PlanError(f"{where}: regions: must be a table of character name = region")
    by_name = {name.casefold(): name for name in characters}
    regions: dict[str, Region] = {}
    for key, spec in value.items():
        name = by_name.get(str(key).casefold())
        if name is None:
            raise PlanError(f"{where}: regions: '{key}' is not one of this shot's characters ({', '.join(characters)})")
        try:
            regions[name] = _region(spec, base_dir)
        except _FieldError as exc:
            raise PlanError(f"{where}: regions: {key}: {exc}") from None
    missing = [name for name in characters if name not in regions]
    if missing:
        raise PlanError(f"{where}: regions: no region for {', '.join(missing)} (give every character of the shot one)")
    return regions


def _shot(number: int, raw: Any, defaults: dict[str, Any], base_seed: int, base_dir: Path) -> Shot:
    where = f"shot {number}"
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: must be a table of fields (prompt = ..., characters = [...]), not {_shown(raw)}")
    table = _normalised_keys(raw, where)
    shot_id = table.get("id", f"shot-{number:03d}")
    if not isinstance(shot_id, str) or not _SHOT_ID.match(shot_id):
        raise PlanError(f"{where}: id: {_shown(shot_id)} must be 1-64 letters, digits, '_', '-' or '.' "
                        "(it names the shot's files)")
    where = f"shot {number} ({shot_id})"
    own = _check_fields(table, (*SHOT_FIELDS, *SHOT_ONLY), where)
    if own.keys() & _SIZE_FIELDS:  # a shot's own size replaces the default one (aspect or width/height)
        defaults = {key: value for key, value in defaults.items() if key not in _SIZE_FIELDS}
    fields = {**defaults, **own}
    for required in ("prompt", "characters"):
        if required not in fields:
            raise PlanError(f"{where}: {required}: missing (give it in the shot or in [defaults])")
    prompt = fields["prompt"].strip()
    if fields.get("style", "").strip():
        prompt = f"{prompt}, {fields['style'].strip()}"
    characters = fields["characters"]
    settings = {_CONFIG_NAMES[key]: value for key, value in fields.items() if key in _CONFIG_NAMES}
    try:  # what only the combination can say: the size for the largest model, max_tries against best_of
        GenerationConfig(prompt=prompt, seed=0, **settings)
    except CastkeepError as exc:
        message = str(exc)
        flag = re.match(r"--([a-z-]+)", message)
        label = flag.group(1) if flag else "aspect" if "aspect ratio" in message else "size"
        message = re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), message.removeprefix(f"--{label} "))
        raise PlanError(f"{where}: {label.replace('-', '_')}: {message}") from None
    seed = fields["seed"] if "seed" in fields else derived_seed(base_seed, shot_id)
    regions = _regions(fields.get("regions"), characters, base_dir, where)
    return Shot(number=number, id=shot_id, prompt=prompt, negative=fields.get("negative", ""), characters=characters,
                seed=seed, settings=settings, regions=regions, caption=fields.get("caption", ""))


def parse_plan(data: Any, *, base_dir: str | os.PathLike[str] = ".", path: Path | None = None) -> Plan:
    """A Plan from the plan's parsed data (TOML/YAML tables); PlanError naming the shot and field."""
    if not isinstance(data, dict):
        raise PlanError("a plan is a table with `shots` (and optionally title, seed, defaults)", path=path)
    try:
        top = _normalised_keys(data, "plan")
        for key in top:
            if key not in PLAN_KEYS:
                raise _unknown_field(key, PLAN_KEYS, "plan")
        title = top.get("title", path.stem if path else "storyboard")
        if not isinstance(title, str):
            raise PlanError(f"plan: title: must be text, not {_shown(title)}")
        try:
            base_seed = _integer(0, MAX_SEED)(top.get("seed", 0))
        except _FieldError as exc:
            raise PlanError(f"plan: seed: {exc}") from None
        raw_defaults = top.get("defaults", {})
        if not isinstance(raw_defaults, dict):
            raise PlanError("defaults: must be a table of shot fields")
        defaults = _check_fields(_normalised_keys(raw_defaults, "defaults"), tuple(SHOT_FIELDS), "defaults")
        raw_shots = top.get("shots")
        if not isinstance(raw_shots, list) or not raw_shots:
            raise PlanError("plan: shots: missing or empty (add [[shots]] tables, each with a prompt)")
        if len(raw_shots) > MAX_SHOTS:
            raise PlanError(f"plan: shots: {len(raw_shots)} shots, more than the {MAX_SHOTS} one plan may hold")
        shots = tuple(_shot(number, raw, defaults, base_seed, Path(base_dir))
                      for number, raw in enumerate(raw_shots, start=1))
        seen: dict[str, int] = {}
        for shot in shots:
            if shot.id.casefold() in seen:
                raise PlanError(f"shot {shot.number} ({shot.id}): id: already used by shot {seen[shot.id.casefold()]}")
            seen[shot.id.casefold()] = shot.number
    except PlanError as exc:
        raise PlanError(str(exc), path=path) from None
    return Plan(path=path, title=title, seed=base_seed, shots=shots)


def read_plan_data(path: Path) -> Any:
    """The plan file's tables (TOML by tomllib, YAML by PyYAML's safe loader)."""
    suffix = path.suffix.lower()
    if suffix not in PLAN_SUFFIXES:
        raise PlanError(f"a plan is a .toml, .yaml or .yml file, not {suffix or 'a file without suffix'}", path=path)
    try:
        if not path.is_file():
            raise PlanError("plan file not found" if not path.exists() else "not a regular file", path=path)
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise PlanError(f"plan file is over {MAX_PLAN_BYTES >> 20} MiB", path=path)
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PlanError("plan file is not UTF-8 text", path=path) from None
    except OSError as exc:
        raise PlanError(f"cannot read the plan ({exc.strerror})", path=path) from None
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"not valid TOML: {exc}", path=path) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PlanError(f"not valid YAML{where}: {problem}", path=path) from None


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and check a plan file; mask files are found relative to its folder."""
    path = Path(path)
    return parse_plan(read_plan_data(path), base_dir=path.parent, path=path)
