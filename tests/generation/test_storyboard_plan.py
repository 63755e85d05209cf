"""Storyboard plans: TOML and YAML, defaults and per-shot overrides, derived seeds, regions, and one clear
line naming the shot and the field for every malformed plan (no model is loaded: these need no torch)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from castkeep.errors import PlanError
from castkeep.generation.storyboard.plan import EXAMPLE_PLAN, derived_seed, load_plan

TOML = """
title = "Test"
seed = 3
[defaults]
negative = "blurry"
aspect = "3:2"
steps = 2
best-of = 2
[[shots]]
prompt = "Ada at a desk"
characters = "Ada"
[[shots]]
id = "two"
prompt = "Ada and Bo"
characters = ["Ada", "Bo"]
width = 64
height = 64
steps = 3
seed = 11
regions = { Ada = "left", Bo = [0.5, 0.0, 1.0, 1.0] }
"""


def write(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_shipped_example_is_a_valid_plan():
    plan = load_plan(EXAMPLE_PLAN)
    assert len(plan.shots) >= 4 and set(plan.characters) == {"Mara", "Theo"}
    assert any(len(shot.characters) == 2 and shot.regions for shot in plan.shots)


def test_defaults_overrides_seeds_and_regions(tmp_path):
    plan = load_plan(write(tmp_path, TOML))
    first, second = plan.shots
    assert plan.title == "Test" and first.id == "shot-001" and first.characters == ("Ada",)
    assert first.negative == "blurry" and first.settings["best_of"] == 2 and first.settings["aspect"] == "3:2"
    # A shot's own size replaces the default aspect; its own seed wins; others derive from the id.
    assert second.settings["steps"] == 3 and "aspect" not in second.settings and second.settings["width"] == 64
    assert second.seed == 11 and first.seed == derived_seed(3, "shot-001")
    assert second.regions["Ada"].box == (0.0, 0.0, 0.5, 1.0) and second.regions["Bo"].label == "box"
    assert second.config(batch_size=2).batch_size == 2 and second.config().seed_for(1) == 12
    # The same plan in YAML reads the same.
    yaml_plan = load_plan(write(tmp_path, """
        title: Test
        seed: 3
        defaults: {negative: blurry, aspect: "3:2", steps: 2, best_of: 2}
        shots:
          - {prompt: Ada at a desk, characters: Ada}
          - {id: two, prompt: Ada and Bo, characters: [Ada, Bo], width: 64, height: 64, steps: 3, seed: 11,
             regions: {Ada: left, Bo: [0.5, 0.0, 1.0, 1.0]}}
        """, "plan.yaml"))
    assert [s.to_dict() for s in yaml_plan.shots] == [s.to_dict() for s in plan.shots]


def test_derived_seeds_do_not_depend_on_position(tmp_path):
    one = load_plan(write(tmp_path, '[[shots]]\nid="a"\nprompt="x"\ncharacters="Ada"\n'
                                    '[[shots]]\nid="b"\nprompt="y"\ncharacters="Ada"\n'))
    swapped = load_plan(write(tmp_path, '[[shots]]\nid="b"\nprompt="y"\ncharacters="Ada"\n'
                                        '[[shots]]\nid="a"\nprompt="x"\ncharacters="Ada"\n'))
    assert {s.id: s.seed for s in one.shots} == {s.id: s.seed for s in swapped.shots}
    assert one.shots[0].seed != one.shots[1].seed


def test_several_characters_without_regions_stand_left_to_right(tmp_path):
    plan = load_plan(write(tmp_path, '[[shots]]\nprompt="x"\ncharacters=["Ada", "Bo", "Cy"]\n'))
    boxes = [plan.shots[0].regions[name].box for name in ("Ada", "Bo", "Cy")]
    assert [round(b[0], 3) for b in boxes] == [0.0, 0.333, 0.667] and boxes[-1][2] == 1.0


GOOD_SHOT = 'prompt = "x"\ncharacters = ["Ada"]\n'
BAD_PLANS = {
    # case: (plan text, what the one line must say)
    "bad steps": ('[[shots]]\nprompt="x"\ncharacters="Ada"\n[[shots]]\nprompt="y"\ncharacters="Ada"\nsteps=0\n',
                  "shot 2 (shot-002): steps: must be an integer between 1 and 1000, not 0"),
    "typo": ('[[shots]]\nprompt="x"\ncharacters="Ada"\nbest_off=3\n', "shot 1 (shot-001): unknown field 'best_off' "
             "(did you mean 'best_of'?)"),
    "no prompt": ('[[shots]]\ncharacters="Ada"\n', "shot 1 (shot-001): prompt: missing"),
    "no characters": ('[[shots]]\nprompt="x"\n', "shot 1 (shot-001): characters: missing"),
    "text steps": ('[[shots]]\nprompt="x"\ncharacters="Ada"\nsteps="30"\n', "steps: must be an integer, not '30'"),
    "id_scale": ('[defaults]\nid_scale=9\n[[shots]]\n' + GOOD_SHOT, "defaults: id_scale: must be a number between 0 and 5"),
    "size": ('[[shots]]\n' + GOOD_SHOT + 'width=500\n', "shot 1 (shot-001): width: 500 must be a positive multiple of 8"),
    "too big": ('[[shots]]\n' + GOOD_SHOT + 'width=8192\nheight=8192\n', "shot 1 (shot-001): width: 8192 is too large"),
    "aspect": ('[[shots]]\n' + GOOD_SHOT + 'aspect="wide"\n', "shot 1 (shot-001): aspect: bad aspect ratio 'wide'"),
    "tries": ('[[shots]]\n' + GOOD_SHOT + 'best_of=4\nmax_tries=2\n',
              "shot 1 (shot-001): max_tries: 2 is below the 4 images num_images/best_of"),
    "scheduler": ('[[shots]]\n' + GOOD_SHOT + 'scheduler="warp"\n', "scheduler: 'warp' is not one of default, ddim"),
    "duplicate id": ('[[shots]]\nid="a"\n' + GOOD_SHOT + '[[shots]]\nid="A"\n' + GOOD_SHOT,
                     "shot 2 (A): id: already used by shot 1"),
    "bad id": ('[[shots]]\nid="../x"\n' + GOOD_SHOT, "shot 1: id: '../x' must be 1-64 letters"),
    "region name": ('[[shots]]\nprompt="x"\ncharacters=["Ada","Bo"]\nregions={Ada="left", Cy="right"}\n',
                    "regions: 'Cy' is not one of this shot's characters"),
    "region missing": ('[[shots]]\nprompt="x"\ncharacters=["Ada","Bo"]\nregions={Ada="left"}\n',
                       "regions: no region for Bo"),
    "region box": ('[[shots]]\nprompt="x"\ncharacters=["Ada","Bo"]\nregions={Ada=[0.5,0,0.2,1], Bo="right"}\n',
                   "regions: Ada: box [0.5, 0, 0.2, 1] must be [left, top, right, bottom]"),
    "mask missing": ('[[shots]]\nprompt="x"\ncharacters=["Ada","Bo"]\nregions={Ada="ada.png", Bo="right"}\n',
                     "regions: Ada: mask file not found: ada.png"),
    "twice": ('[[shots]]\nprompt="x"\ncharacters=["Ada","ada"]\n', "characters: names a character twice"),
    "no shots": ('title = "x"\n', "plan: shots: missing or empty"),
    "top typo": ('titel = "x"\n[[shots]]\n' + GOOD_SHOT, "plan: unknown field 'titel' (did you mean 'title'?)"),
    "toml syntax": ('[[shots]]\nprompt = "x\n', "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_a_malformed_plan_is_one_line_naming_shot_and_field(tmp_path, case):
    text, expected = BAD_PLANS[case]
    with pytest.raises(PlanError) as caught:
        load_plan(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message and "\n" not in message and message.startswith(str(tmp_path / "plan.toml"))
    assert caught.value.exit_code == 21


def test_mask_regions_are_read_relative_to_the_plan(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8), 255).save(tmp_path / "ada.png")
    (tmp_path / "bo.png").write_text("not an image")
    text = '[[shots]]\nprompt="x"\ncharacters=["Ada","Bo"]\nregions={Ada="ada.png", Bo="right"}\n'
    plan = load_plan(write(tmp_path, text))
    assert plan.shots[0].regions["Ada"].mask == tmp_path / "ada.png"
    with pytest.raises(PlanError, match="regions: Bo: mask file is not a readable image: bo.png"):
        load_plan(write(tmp_path, text.replace('Bo="right"', 'Bo="bo.png"')))


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("plan.yaml", "shots:\n  - {prompt: x, characters: Ada, aspect: 3:2}\n", "quote it: YAML reads an unquoted 3:2 as 182"),
    ("plan.yaml", "shots: [\n", "not valid YAML at line"),
    ("plan.yaml", "- just a list\n", "a plan is a table"),
    ("plan.json", "{}", "a plan is a .toml, .yaml or .yml file"),
    ("missing.toml", None, "plan file not found"),
])
def test_unreadable_plans_are_one_line(tmp_path, name, text, expected):
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        load_plan(path)
