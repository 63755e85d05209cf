"""insightface's ONNX face models on OpenVINO instead of onnxruntime (`--device openvino`).

On Intel CPUs OpenVINO runs the face models faster than onnxruntime's CPU provider: ArcFace MobileFaceNet
7.4 vs 14.7 ms per face on one core, a warm detect + embed 11.4 vs 17.0 ms (README, "Speed").
insightface's model classes take any object with onnxruntime's session surface (`get_inputs`,
`get_outputs`, `run`), so one compiled OpenVINO model behind that surface runs SCRFD, ArcFace and the
106-point model unchanged: the same pre- and post-processing, embeddings equal to float32 rounding (cosine
to the onnxruntime embedding above 1 - 1e-5; bfloat16, which OpenVINO would pick on AMX CPUs, is kept off).
"""

from __future__ import annotations

import inspect
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError

PROVIDER = "OpenVINO:CPU"  # what `ModelPack.active_providers()` reports for these sessions


@dataclass(frozen=True)
class NodeArg:
    """onnxruntime's NodeArg as insightface reads it: a name, and a shape whose free dimensions are strings."""

    name: str
    shape: list[int | str]


def _node_arg(port: Any) -> NodeArg:
    shape: list[int | str] = [dim.get_length() if dim.is_static else str(dim) for dim in port.get_partial_shape()]
    return NodeArg(port.get_any_name(), shape)


def require_openvino() -> Any:
    """The openvino module, or one MissingDependencyError line naming the extra to install."""
    try:
        import openvino
    except ModuleNotFoundError:
        raise MissingDependencyError("--device openvino needs OpenVINO: pip install 'castkeep[openvino]'") from None
    return openvino


class OpenVinoSession:
    """One ONNX model compiled by OpenVINO for the CPU, used like an onnxruntime InferenceSession.

    Precision is pinned to float32: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise run bfloat16, which
    moved ArcFace embeddings by up to 5e-4 here (1 - cosine to the float32 one), off the calibration. Thread
    pinning is off: with it, two workers' one-thread models were pinned to the same core. `threads` bounds the
    CPU threads one inference uses (None: OpenVINO's choice). One inference at a time per session, as a worker's
    models are used (the lock only guards against misuse: the infer request's buffers are shared)."""

    def __init__(self, model_file: str | os.PathLike, *, threads: int | None = None) -> None:
        openvino = require_openvino()
        core = openvino.Core()
        model = core.read_model(os.fspath(model_file))
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                  "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self._inputs = [_node_arg(port) for port in self._compiled.inputs]
        self._outputs = [_node_arg(port) for port in self._compiled.outputs]
        self._output_index = {name: index for index, port in enumerate(self._compiled.outputs)
                              for name in port.get_names()}

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = output_names or [arg.name for arg in self._outputs]
        with self._lock:
            self._request.infer({name: np.ascontiguousarray(value) for name, value in feed.items()})
            # Copies: the request's output buffers are overwritten by the next inference.
            return [np.array(self._request.get_output_tensor(self._output_index[name]).data) for name in names]


def load_model(model_file: Path, task: str, *, threads: int | None = None) -> Any:
    """insightface's model object for `task` (as its model_zoo router names it) running on OpenVINO."""
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.landmark import Landmark
    from insightface.model_zoo.scrfd import SCRFD

    session = OpenVinoSession(model_file, threads=threads)
    path = os.fspath(model_file)
    if task == "detection":
        # insightface 2.x builds a fixed-shape onnxruntime session per input size unless told not to; OpenVINO
        # takes every size on the one dynamic model (0.7.x has no such option and always does).
        options = {"static_shape_sessions": False} if "static_shape_sessions" in inspect.signature(SCRFD).parameters else {}
        return SCRFD(model_file=path, session=session, **options)
    if task == "recognition":
        return ArcFaceONNX(model_file=path, session=session)
    if task == "landmark_2d_106":
        return Landmark(model_file=path, session=session)
    raise ValueError(f"no OpenVINO loader for a {task} model")
