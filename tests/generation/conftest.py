"""Tiny random SD1.5 pipelines and FaceID checkpoints on disk, saved once per session and loaded the
way real weights are (`from_pretrained(folder)`, `load_ip_adapter(file)`).
Any test requesting `tiny_models` is in the `generation` lane (tests/conftest.py)."""

from __future__ import annotations

import pytest
import tiny_fixtures

tiny_models = tiny_fixtures.tiny_models  # the fixture, shared with tests/serve


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """The SD1.5 pipeline with the LoRA-carrying FaceID checkpoint, on the CPU (one per test module:
    tests that change its state put it back)."""
    from castkeep.generation.loading import build_pipeline

    return build_pipeline(str(tiny_models["pipeline"]), str(tiny_models["faceid"]), device="cpu")
