"""`castkeep doctor`: what castkeep would run on, here and now."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import click

from .common import emit, json_option, models_option

PACKAGES = ["castkeep", "numpy", "onnxruntime", "onnxruntime-gpu", "insightface", "mediapipe",
            "faiss-cpu", "opencv-python", "opencv-python-headless", "opencv-contrib-python",
            "torch", "diffusers", "transformers", "peft", "safetensors", "click"]
LANDMARKER_LICENSE = "Apache-2.0 (MediaPipe Face Landmarker model card)"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _providers(pack: Any) -> dict[str, Any]:
    """Which providers onnxruntime lists, and which a real session on CUDA actually gets."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    report: dict[str, Any] = {"available": available, "cuda_usable": False}
    if "CUDAExecutionProvider" in available and pack is not None:
        # onnxruntime-gpu lists CUDA even without a GPU and then falls back: only a session tells.
        session = onnxruntime.InferenceSession(os.fspath(pack.model_file("recognition")),
                                               providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        report["cuda_session_providers"] = session.get_providers()
        report["cuda_usable"] = session.get_providers()[0] == "CUDAExecutionProvider"
    return report


def _torch_device() -> dict[str, Any]:
    if _version("torch") is None:
        return {"installed": False}
    import torch  # only doctor and generation import torch

    return {"installed": True, "cuda": bool(torch.cuda.is_available()),
            "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}


@click.command()
@models_option
@json_option
def doctor(models: str | None, as_json: bool) -> None:
    """Versions, execution providers, model packs found and their licenses."""
    from ..errors import CastkeepError
    from ..landmarks.mesh import LANDMARKER_SHA256, resolve_landmarker
    from ..landmarks.model_pack import ModelPack, available_packs

    pack = None
    pack_report: dict[str, Any]
    try:
        pack = ModelPack.from_pretrained(models, download=False)
        pack_report = {"path": str(pack.path), "name": pack.name, "license": pack.license,
                       "models": {task: pack.model_file(task).name
                                  for task in ("detection", "recognition", "landmark_2d_106")
                                  if pack.has(task)},
                       "fingerprint": pack.fingerprint}
        pack.model("recognition")
        pack_report["session_providers"] = pack.active_providers()["recognition"]
    except CastkeepError as exc:
        pack_report = {"error": str(exc)}
    try:
        from ..utils import file_sha256

        landmarker = resolve_landmarker(search=(pack.path,) if pack else (), download=False)
        landmarker_report: dict[str, Any] = {
            "path": str(landmarker), "license": LANDMARKER_LICENSE,
            "sha256_ok": file_sha256(landmarker) == LANDMARKER_SHA256}
    except CastkeepError as exc:
        landmarker_report = {"error": str(exc)}
    data = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": {name: _version(name) for name in PACKAGES if _version(name)},
        "onnxruntime_providers": _providers(pack),
        "torch": _torch_device(),
        "model_pack": pack_report,
        "packs_found": [str(p) for p in available_packs()],
        "face_landmarker": landmarker_report,
    }
    emit(data, as_json, _text)


def _text(d: dict[str, Any]) -> str:
    lines = [f"python {d['python']} on {d['platform']}"]
    lines += [f"  {name} {version}" for name, version in d["packages"].items()]
    providers = d["onnxruntime_providers"]
    lines.append(f"onnxruntime providers available: {', '.join(providers['available'])}")
    lines.append(f"CUDA for face models: {'yes' if providers['cuda_usable'] else 'no (CPU only)'}")
    torch = d["torch"]
    if torch["installed"]:
        lines.append(f"torch devices: cpu{', cuda' if torch['cuda'] else ''}{', mps' if torch['mps'] else ''}")
    else:
        lines.append("torch: not installed (needed only for `castkeep generate`)")
    pack = d["model_pack"]
    if "error" in pack:
        lines.append(f"model pack: {pack['error']}")
    else:
        lines.append(f"model pack: {pack['name']} at {pack['path']}")
        lines.append(f"  models: {pack['models']}; runs on {', '.join(pack['session_providers'])}")
        lines.append(f"  license: {pack['license']}")
    landmarker = d["face_landmarker"]
    if "error" in landmarker:
        lines.append(f"face landmarker: {landmarker['error']}")
    else:
        ok = "checksum ok" if landmarker["sha256_ok"] else "CHECKSUM MISMATCH"
        lines.append(f"face landmarker: {landmarker['path']} ({ok}); license {landmarker['license']}")
    return "\n".join(lines)
