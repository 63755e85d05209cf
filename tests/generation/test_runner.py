"""GenerationRunner on the tiny SD1.5 pipeline: seeds, sizes, best-of-N, retries until a minimum score,
batches, and the files a run leaves (PNG with A1111 metadata, JSON sidecar, summary.json, contact sheet),
scored with the real face models or, where ranking must depend on pixels, by brightness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_pipelines import STEPS, PixelScorer, unit

from castkeep.errors import GenerationError
from castkeep.generation.config import GenerationConfig
from castkeep.generation.metadata import parse_a1111_parameters, read_png_text, sidecar_errors, summary_errors
from castkeep.generation.runner import GenerationRunner, Identity, generate_images
from castkeep.generation.scoring import IdentityScorer

pytestmark = pytest.mark.generation


def sidecar_of(result, attempt) -> dict:
    return json.loads((result.out_dir / attempt.file).with_suffix(".json").read_text())


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_same_seed_same_pixels_other_seed_or_identity_other_pixels(loaded):
    config = GenerationConfig("portrait photo of a person", negative_prompt="blurry", seed=42, steps=STEPS)

    def draw(vector, seed):
        images, _ = generate_images(loaded, config, vector, [seed], 64, 64)
        return np.asarray(images[0])

    first = draw(unit(0), 42)
    assert np.array_equal(first, draw(unit(0), 42))
    assert not np.array_equal(first, draw(unit(1), 42))
    assert not np.array_equal(first, draw(unit(0), 43))


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "4:3"])
def test_output_size_follows_aspect_ratio(loaded, tmp_path, aspect):
    config = GenerationConfig("a face", seed=7, steps=STEPS, aspect=aspect)
    result = GenerationRunner(loaded, PixelScorer()).run(config, Identity("Ada", unit(0)), tmp_path / "out")
    width, height = png_size(result.out_dir / result.kept[0].file)
    w, h = (float(x) for x in aspect.split(":"))
    # An SD1.5-shaped model: the short side stays at the native 64 px, the long side grows (multiples of 8).
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - w / h) <= 8 / min(width, height)
    assert min(width, height) == 64
    assert (width, height) == (result.summary["width"], result.summary["height"])


def test_run_scores_every_output_and_writes_metadata(loaded, fast_analyzer, tmp_path):
    config = GenerationConfig("portrait, soft light", negative_prompt="blurry, lowres", seed=100, steps=STEPS,
                              num_images=2, scheduler="euler_a", id_scale=0.6)
    scorer = IdentityScorer(fast_analyzer, unit(5), name="Ada")
    result = GenerationRunner(loaded, scorer, analyzer_fingerprint=fast_analyzer.fingerprint).run(
        config, Identity("Ada", unit(5), source="vector"), tmp_path / "run")
    assert [a.seed for a in result.kept] == [100, 101]
    for attempt in result.kept:
        png = result.out_dir / attempt.file
        sidecar = sidecar_of(result, attempt)
        assert sidecar_errors(sidecar) == []
        # Tiny-model noise has no face: a recorded result, not a crash.
        assert sidecar["score"]["face_found"] is False and sidecar["score"]["cosine"] is None
        assert sidecar["seed"] == attempt.seed and sidecar["settings"]["sampler"] == "Euler a"
        assert sidecar["settings"]["id_scale"] == 0.6 and sidecar["negative_prompt"] == config.negative_prompt
        assert sidecar["models"]["face_analyzer"] == fast_analyzer.fingerprint
        text = read_png_text(png)
        params = parse_a1111_parameters(text["parameters"])
        assert params["prompt"] == config.prompt and params["negative_prompt"] == config.negative_prompt
        assert params["Seed"] == str(attempt.seed) and params["Steps"] == str(STEPS)
        assert params["Size"] == "{}x{}".format(*png_size(png)) and params["IP-Adapter weight"] == "0.6"
        assert params["Identity cosine"] == "no face" and params["Sampler"] == "Euler a"
        assert json.loads(text["castkeep"]) == sidecar
    summary = json.loads(result.summary_path.read_text())
    assert summary_errors(summary) == []
    assert summary["face_found"] == 0 and len(summary["consistency"]["matrix"]) == 2
    assert [o["seed"] for o in summary["outputs"]] == [100, 101]
    assert Image.open(result.contact_sheet_path).size[0] > 256
    # A run never overwrites another.
    with pytest.raises(GenerationError, match="already holds"):
        GenerationRunner(loaded, scorer).run(config, Identity("Ada", unit(5)), tmp_path / "run")


def test_best_of_keeps_top_scores_and_records_every_attempt(loaded, tmp_path):
    config = GenerationConfig("a face", seed=10, steps=STEPS, num_images=2, best_of=5)
    result = GenerationRunner(loaded, PixelScorer()).run(config, Identity("Ada", unit(0)), tmp_path / "best",
                                                         keep_rejected=True)
    # Each attempt's score is the brightness of the image drawn with its seed, measured here.
    scores = {a.seed: PixelScorer().score(a.image).cosine for a in result.attempts}
    assert sorted(scores) == list(range(10, 15))
    best_two = sorted(scores, key=scores.get, reverse=True)[:2]
    assert [a.seed for a in result.kept] == best_two
    sidecar = sidecar_of(result, result.kept[0])
    assert sidecar_errors(sidecar) == []
    assert [a["seed"] for a in sidecar["attempts"]] == list(range(10, 15))
    assert sum(a["kept"] for a in sidecar["attempts"]) == 2
    assert {a["seed"]: a["cosine"] for a in sidecar["attempts"]} == {s: round(v, 4) for s, v in scores.items()}
    rejected = sorted((result.out_dir / "rejected").glob("*.png"))
    assert len(rejected) == 3
    for path in rejected:
        assert sidecar_errors(json.loads(path.with_suffix(".json").read_text())) == []
    # Each kept seed regenerates its image exactly on its own.
    alone = GenerationRunner(loaded, PixelScorer()).run(
        GenerationConfig("a face", seed=best_two[0], steps=STEPS), Identity("Ada", unit(0)), tmp_path / "alone")
    assert np.array_equal(np.asarray(alone.kept[0].image), np.asarray(result.kept[0].image))


class JudgeAgainstCosine(PixelScorer):
    """The judge's verdict runs against ArcFace's cosine (as when dlib rejects what ArcFace likes)."""

    def score(self, image: Image.Image):
        result = super().score(image)
        result.log_odds, result.probability = -result.log_odds, 1.0 - result.probability
        return result


def test_best_of_ranks_by_the_judge_never_by_the_conditioning_cosine(loaded, tmp_path):
    config = GenerationConfig("a face", seed=10, steps=STEPS, num_images=2, best_of=5)
    result = GenerationRunner(loaded, JudgeAgainstCosine()).run(config, Identity("Ada", unit(0)), tmp_path / "j")
    cosines = {a.seed: a.score.cosine for a in result.attempts}
    assert [a.seed for a in result.kept] == sorted(cosines, key=cosines.get)[:2]  # the lowest cosines win
    assert result.summary["mean_probability"] == pytest.approx(np.mean([a.score.probability for a in result.kept]),
                                                               abs=1e-4)


def test_min_score_retries_with_new_seeds_until_the_mark_or_the_budget(loaded, tmp_path):
    runner = GenerationRunner(loaded, PixelScorer())
    impossible = GenerationConfig("a face", seed=20, steps=STEPS, min_score=1.0, max_tries=6)
    result = runner.run(impossible, Identity("Ada", unit(0)), tmp_path / "hard")
    assert [a.seed for a in result.attempts] == list(range(20, 26))
    assert not result.target_met and result.summary["target_met"] is False
    values = [a.score.cosine for a in result.attempts]
    assert len(result.kept) == 1 and result.kept[0].score.cosine == max(values)
    # A pass mark between a seed's score and its successor's: starting at that seed, the retry stops
    # at the successor, on the second image.
    start = next(i for i in range(5) if values[i] < values[i + 1])
    reachable = GenerationConfig("a face", seed=20 + start, steps=STEPS, max_tries=4,
                                 min_score=(values[start] + values[start + 1]) / 2)
    retried = runner.run(reachable, Identity("Ada", unit(0)), tmp_path / "reach")
    assert retried.target_met and [a.seed for a in retried.attempts] == [20 + start, 21 + start]
    assert [a.seed for a in retried.kept] == [21 + start] and retried.kept[0].passed
    easy = runner.run(GenerationConfig("a face", seed=20, steps=STEPS, min_score=0.0, max_tries=3),
                      Identity("Ada", unit(0)), tmp_path / "easy")
    assert len(easy.attempts) == 1 and easy.target_met


def test_batches_give_the_same_images_as_single_calls(loaded):
    config = GenerationConfig("a face", seed=30, steps=STEPS, batch_size=2)
    batch, _ = generate_images(loaded, config, unit(0), [30, 31], 64, 64)
    single, _ = generate_images(loaded, config, unit(0), [31], 64, 64)
    assert np.allclose(np.asarray(batch[1], dtype=np.int16), np.asarray(single[0], dtype=np.int16), atol=2)


def test_sizes_past_the_loaded_model_are_refused_before_generating(loaded, tmp_path):
    """Issue 13 item 7: the tiny model's native side is 64 px, so 512x64 (8x) is refused before any step runs."""
    from castkeep.errors import SizeError

    config = GenerationConfig("a face", seed=7, steps=STEPS, width=512, height=64)
    with pytest.raises(SizeError, match="at most 256 px, 4x the native 64 px of this sd15 model"):
        GenerationRunner(loaded, PixelScorer()).run(config, Identity("Ada", unit(0)), tmp_path / "out")
    assert not (tmp_path / "out").exists()
