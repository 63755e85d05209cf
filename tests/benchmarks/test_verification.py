"""`castkeep bench verify` on small LFW slices: JSON schema, sane numbers, the ROC plot, and
failures-to-detect counted rather than dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castkeep.benchmarks.pairs import read_pairs
from castkeep.benchmarks.pipelines import CastkeepPipeline
from castkeep.benchmarks.verification import run_verification
from castkeep.errors import BenchmarkInputError
from castkeep.identity.similarity import SAME_PERSON_THRESHOLD

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {"accuracy", "accuracy_std", "threshold", "auc", "eer", "tar_at_far", "failures_to_detect",
               "fold_accuracies", "fixed_threshold", "images_per_s"}


def assert_png(path: str | Path) -> None:
    path = Path(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()


def _lfw_slice(faces_dir: Path, n: int) -> list[str]:
    lines = (faces_dir / "lfw_pairs_fold1" / "pairs.txt").read_text().splitlines()
    same = [line for line in lines if line.endswith(" 1")][: n // 2]
    different = [line for line in lines if line.endswith(" 0")][: n // 2]
    return same + different


@pytest.mark.slow
def test_verify_cli_on_lfw_slice(invoke, faces_dir, lfw_fold, tmp_path):
    pairs_file = faces_dir / "lfw_pairs_fold1" / "pairs.txt"
    result = invoke("bench", "verify", "--pairs", str(pairs_file), "--limit", "20", "--no-flip",
                    "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["bench"] == "verify" and data["pairs"] == 20
    assert data["genuine_pairs"] == data["impostor_pairs"] == 10
    assert METRIC_KEYS <= set(data["castkeep"]) and METRIC_KEYS <= set(data["baseline"])
    assert data["accuracy"] == data["castkeep"]["accuracy"]
    # Every pair's score is the cosine of the two photos' centre-face embeddings, computed apart from
    # the bench by the session's LFW fixture; the fixed-threshold accuracy follows from those.
    lines = pairs_file.read_text().splitlines()
    chosen = [lines[number - 1].split() for number in data["scores"]["pair_lines"]]
    expected = lfw_fold.scores([(a, b, flag == "1") for a, b, flag in chosen])
    np.testing.assert_allclose(data["scores"]["castkeep"], expected, atol=2e-6)
    assert data["scores"]["same"] == [int(flag == "1") for _, _, flag in chosen]
    labels = np.array(data["scores"]["same"], dtype=bool)
    assert data["castkeep"]["fixed_threshold"]["accuracy"] == pytest.approx(
        float(((expected >= SAME_PERSON_THRESHOLD) == labels).mean()))
    # These LFW pairs are easy for any working ArcFace pipeline.
    assert data["accuracy"] >= 0.9 and data["castkeep"]["auc"] >= 0.95
    assert data["baseline"]["accuracy"] >= 0.9
    assert -1.0 <= data["castkeep"]["threshold"] <= 1.0
    assert [t["far"] for t in data["castkeep"]["tar_at_far"]] == [1e-2, 1e-3]
    assert data["castkeep"]["failures_to_detect"]["images"] == 0
    assert set(data["variants"]) == {"center", "center+flip", "largest", "largest+flip"}
    assert data["published"]["lfw_accuracy"] == pytest.approx(0.997)
    assert len(data["scores"]["castkeep"]) == len(data["scores"]["insightface"]) == 20
    assert_png(data["plots"]["roc"])
    assert_png(data["plots"]["score histogram"])
    assert json.loads(Path(data["result_json"]).read_text())["accuracy"] == data["accuracy"]


@pytest.mark.slow
def test_shuffled_labels_score_near_chance(invoke, faces_dir, tmp_path):
    lines = _lfw_slice(faces_dir, 40)
    rng = np.random.default_rng(7)
    labels = rng.permutation([line.split()[2] for line in lines])
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("".join(f"{' '.join(line.split()[:2])} {label}\n"
                                for line, label in zip(lines, labels, strict=True)))
    result = invoke("bench", "verify", "--pairs", str(shuffled), "--root", str(faces_dir), "--no-baseline",
                    "--no-flip", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["baseline"] is None
    # Fixed seed and deterministic embeddings: no flake. Chance is 0.5; a working pipeline on the
    # true labels scores ~1.0 on these pairs.
    assert data["accuracy"] <= 0.75
    assert 0.25 <= data["castkeep"]["auc"] <= 0.75


def test_no_face_images_count_as_failures(model_pack, faces_dir, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    lfw = faces_dir / "lfw_pairs_fold1"
    a, b = lfw / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg", lfw / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg"
    other = lfw / "Akhmed_Zakayev" / "Akhmed_Zakayev_0001.jpg"
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(f"{a} {b} 1\n{a} {blank} 1\n{a} {other} 0\n{blank} {other} 0\n")
    pairs = read_pairs(pairs_file, tmp_path)
    result, _ = run_verification(pairs, model_pack, baseline=False)
    failures = result["castkeep"]["failures_to_detect"]
    assert failures["images"] == 1 and failures["no_face"] == [str(blank)]
    assert failures["pairs"] == 2 and failures["genuine_pairs"] == 1
    assert result["pairs"] == 4  # nothing dropped
    assert result["scores"]["castkeep"][1] == -1.0 and result["scores"]["castkeep"][3] == -1.0


@pytest.mark.parametrize("selection,flip", [("center", True), ("largest", False)])
def test_variants_equal_the_analyzer(model_pack, faces_dir, selection, flip):
    """The verification variants come from one detection, and must be exactly what the analyzer
    configured that way returns, on a multi-face photo too."""
    from castkeep.identity.analyzer import FaceAnalyzer

    path = faces_dir / "groups" / "fr_obama_and_biden.jpg"
    variants = CastkeepPipeline(model_pack).variants(path)
    analyzer = FaceAnalyzer(model_pack, dense=False, landmarks_106=False, selection=selection, flip=flip)
    expected = analyzer.embed(path).embedding
    key = f"{selection}+flip" if flip else selection
    np.testing.assert_allclose(variants.embeddings[key], expected, atol=1e-6)


def test_bad_pairs_file_is_one_line_error(invoke, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("not a pairs file\n")
    result = invoke("bench", "verify", "--pairs", str(bad), "--out", str(tmp_path))
    assert result.returncode == BenchmarkInputError.exit_code
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def _generated_slice(faces_dir: Path, tmp_path: Path, n: int) -> Path:
    """The first n/2 genuine and n/2 impostor pairs of generated_dev, as their own pairs file."""
    root = faces_dir / "generated_dev"
    lines = (root / "pairs.txt").read_text().splitlines()
    same = [line for line in lines if line.endswith(" 1")][: n // 2]
    different = [line for line in lines if line.endswith(" 0")][: n // 2]
    target = tmp_path / "generated.txt"
    rows = [line.split() for line in same + different]
    target.write_text("".join(f"{root / a} {root / b} {label}\n" for a, b, label in rows))
    return target


@pytest.mark.slow
def test_verify_generated_domain_reports_each_scorer_and_the_default_verdict(cli, faces_dir, tmp_path):
    from castkeep.identity import domains

    pairs_file = _generated_slice(faces_dir, tmp_path, 24)
    result = cli("bench", "verify", "--pairs", str(pairs_file), "--root", "/", "--domain", "generated",
                 "--scorer", "fused", "--no-baseline", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["scorer"], data["domain"]) == ("fused", "generated")
    assert set(data["scorers"]) == {"arcface", "dlib", "fused"}
    for name, metrics in data["scorers"].items():
        assert 0.5 <= metrics["auc"] <= 1.0 and [t["far"] for t in metrics["tar_at_far"]] == [1e-2, 1e-3]
        assert metrics["fixed_threshold"]["scorer"] == name and metrics["fixed_threshold"]["domain"] == "generated"
    assert data["castkeep"]["fixed_threshold"] == data["scorers"]["fused"]["fixed_threshold"]
    # The default verdict is the product's generated-domain threshold, not one fitted on these pairs:
    # recompute it from the per-pair raw numbers.
    labels = np.array(data["scores"]["same"], dtype=bool)
    cosines = np.array(data["scores"]["arcface_cosine"], dtype=float)
    distances = np.array(data["scores"]["dlib_distance"], dtype=float)
    arcface = data["scorers"]["arcface"]["fixed_threshold"]
    assert arcface["threshold"] == pytest.approx(domains.ARCFACE["generated"].threshold)
    assert arcface["accuracy"] == pytest.approx(np.mean((cosines >= domains.ARCFACE["generated"].threshold) == labels))
    dlib = data["scorers"]["dlib"]["fixed_threshold"]
    assert dlib["accuracy"] == pytest.approx(np.mean((distances <= domains.DLIB["generated"].threshold) == labels))
    assert data["castkeep"]["fixed_threshold"]["accuracy"] >= 0.75
    assert len(data["scores"]["castkeep"]) == 24


def test_domain_picks_the_default_verdict(model_pack, faces_dir, tmp_path):
    """Same pairs, same embeddings: only the fixed threshold (and so its accuracy) follows the domain."""
    pairs = read_pairs(_generated_slice(faces_dir, tmp_path, 12), "/")
    photo, _ = run_verification(pairs, model_pack, baseline=False)
    generated, _ = run_verification(pairs, model_pack, baseline=False, domain="generated")
    assert photo["castkeep"]["fixed_threshold"]["threshold"] == 0.27
    assert generated["castkeep"]["fixed_threshold"]["threshold"] < 0.2
    assert photo["scores"]["castkeep"] == generated["scores"]["castkeep"]
    assert photo["castkeep"]["accuracy"] == generated["castkeep"]["accuracy"]
    assert set(photo["scorers"]) == {"arcface"} and photo["dlib_model"] is None
    # generated genuine pairs sit below 0.27: the generated verdict accepts more of them
    assert generated["castkeep"]["fixed_threshold"]["accuracy"] >= photo["castkeep"]["fixed_threshold"]["accuracy"]
