"""Tiny random SD1.5 pipelines and FaceID checkpoints on disk, saved once per session and loaded the
way real weights are (`from_pretrained(folder)`, `load_ip_adapter(file)`).
Any test requesting `tiny_models` is in the `generation` lane (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from tiny_pipelines import save_tiny_faceid, save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-models")
    pipeline = save_tiny_pipeline(root / "tiny-sd15")
    return {
        "pipeline": pipeline,
        # Saved under h94's real file name: castkeep knows it conditions on buffalo_l embeddings.
        "faceid": save_tiny_faceid(root / "adapters" / "ip-adapter-faceid_sd15.bin", pipeline, lora=True),
        "plain": save_tiny_faceid(root / "plain" / "faceid-nolora.safetensors", pipeline, lora=False),
    }


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """The SD1.5 pipeline with the LoRA-carrying FaceID checkpoint, on the CPU (one per test module:
    tests that change its state put it back)."""
    from castkeep.generation.loading import build_pipeline

    return build_pipeline(str(tiny_models["pipeline"]), str(tiny_models["faceid"]), device="cpu")
