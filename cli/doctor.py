"""`castkeep doctor`: what castkeep would run on, here and now."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import click

from .common import device_option, emit, json_option, models_option

PACKAGES = ["castkeep", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "insightface", "mediapipe",
            "faiss-cpu", "opencv-python", "opencv-python-headless", "opencv-contrib-python",
            "torch", "diffusers", "transformers", "peft", "safetensors", "click"]
LANDMARKER_LICENSE = "Apache-2.0 (MediaPipe Face Landmarker model card)"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _providers(pack: Any) -> dict[str, Any]:
    """Which providers onnxruntime lists, and which a real session on CUDA (and TensorRT) actually gets."""
    import onnxruntime

    from ..landmarks.model_pack import ENV_THREADS

    available = onnxruntime.get_available_providers()
    report: dict[str, Any] = {"available": available, "cuda_usable": False, "tensorrt_usable": False,
                              "session": {"intra_op_threads": os.environ.get(ENV_THREADS) or "auto (physical cores)",
                                          "spinning": False, "graph_optimization": "all"}}
    for provider, key in (("CUDAExecutionProvider", "cuda"), ("TensorrtExecutionProvider", "tensorrt")):
        if provider in available and pack is not None:
            # onnxruntime-gpu lists CUDA even without a GPU and then falls back: only a session tells.
            session = onnxruntime.InferenceSession(os.fspath(pack.model_file("recognition")),
                                                   providers=[provider, "CPUExecutionProvider"])
            report[f"{key}_session_providers"] = session.get_providers()
            report[f"{key}_usable"] = session.get_providers()[0] == provider
    return report


def _dlib() -> dict[str, Any]:
    from ..errors import CastkeepError
    from ..identity.dlib_recogniser import DlibRecogniser

    try:
        recogniser = DlibRecogniser()
    except CastkeepError as exc:
        return {"error": str(exc)}
    return {"backend": recogniser.backend, "runs_on": recogniser.providers, "fingerprint": recogniser.fingerprint}


def _torch_device() -> dict[str, Any]:
    if _version("torch") is None:
        return {"installed": False}
    import torch  # only doctor and generation import torch

    return {"installed": True, "cuda": bool(torch.cuda.is_available()),
            "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}


@click.command()
@models_option
@device_option
@json_option
def doctor(models: str | None, device: str, as_json: bool) -> None:
    """Versions, execution providers, model packs found and their licenses, and what each face model really
    runs on with --device (onnxruntime falls back to the CPU silently)."""
    from ..errors import CastkeepError
    from ..landmarks.mesh import LANDMARKER_SHA256, resolve_landmarker
    from ..landmarks.model_pack import ModelPack, available_packs

    pack = None
    pack_report: dict[str, Any]
    try:
        pack = ModelPack.from_pretrained(models, device=device, download=False)
        pack_report = {"path": str(pack.path), "name": pack.name, "license": pack.license,
                       "models": {task: pack.model_file(task).name
                                  for task in ("detection", "recognition", "landmark_2d_106")
                                  if pack.has(task)},
                       "fingerprint": pack.fingerprint}
        pack.model("detection")
        pack.model("recognition")
        pack_report["session_providers"] = pack.active_providers()["recognition"]
        pack_report["runs_on"] = pack.active_providers()
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
        "dlib": _dlib(),
    }
    emit(data, as_json, _text)


def _text(d: dict[str, Any]) -> str:
    lines = [f"python {d['python']} on {d['platform']}"]
    lines += [f"  {name} {version}" for name, version in d["packages"].items()]
    providers = d["onnxruntime_providers"]
    lines.append(f"onnxruntime providers available: {', '.join(providers['available'])}")
    lines.append(f"CUDA for face models: {'yes' if providers['cuda_usable'] else 'no (CPU only)'}"
                 + ("; TensorRT: yes" if providers.get("tensorrt_usable") else ""))
    session = providers["session"]
    lines.append(f"onnxruntime sessions: intra-op threads {session['intra_op_threads']}, spinning off, "
                 f"graph optimisation {session['graph_optimization']}")
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
        lines.append(f"  models: {pack['models']}")
        lines += [f"  {task} runs on {', '.join(runs_on)}" for task, runs_on in pack["runs_on"].items()]
        lines.append(f"  license: {pack['license']}")
    landmarker = d["face_landmarker"]
    if "error" in landmarker:
        lines.append(f"face landmarker: {landmarker['error']}")
    else:
        ok = "checksum ok" if landmarker["sha256_ok"] else "CHECKSUM MISMATCH"
        lines.append(f"face landmarker: {landmarker['path']} ({ok}); license {landmarker['license']}")
    dlib = d["dlib"]
    lines.append(f"dlib scorer: {dlib['error']}" if "error" in dlib
                 else f"dlib scorer: {dlib['backend']} backend, runs on {', '.join(dlib['runs_on'])}")
    return "\n".join(lines)
