"""The `tiny_models` fixture, shared by the generation and server tests (each conftest imports it): tiny random
SD1.5 weights and FaceID checkpoints on disk, saved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from tiny_pipelines import save_tiny_faceid, save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-models")
    pipeline = save_tiny_pipeline(root / "tiny-sd15")
    return {
        "root": root,
        "pipeline": pipeline,
        # Saved under h94's real file name: castkeep knows it conditions on buffalo_l embeddings.
        "faceid": save_tiny_faceid(root / "adapters" / "ip-adapter-faceid_sd15.bin", pipeline, lora=True),
        "plain": save_tiny_faceid(root / "plain" / "faceid-nolora.safetensors", pipeline, lora=False),
    }
