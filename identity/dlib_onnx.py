"""dlib's face recognition ResNet on onnxruntime, converted from dlib's own `.dat` file.

dlib-bin is built without BLAS: its network takes about 70 ms per chip on 2 CPU cores. The same weights
as an ONNX graph run on onnxruntime (CPU, or CUDA with onnxruntime-gpu) several times faster, and agree
with dlib's `compute_face_descriptor` to float32 rounding (tests/identity/test_dlib_onnx.py).

The `.dat` file is a dlib `serialize` stream of the network type `anet_type` in dlib's
tools/python/src/face_recognition.cpp. A network serializes from its loss layer inwards: each layer writes
its version, then its whole subnetwork, then its own details, so the stream holds every layer's version
(outermost first), the input layer, then every layer's parameters (innermost first). The stream does not
name the network's structure, so `architecture()` spells it out as the C++ type does and the parser checks
every layer's version string and shapes against it; any other file is refused.

What the graph reproduces, as dlib computes it (dlib 20.0 dnn/layers.h, input.h, cuda/cpu_dlib.cpp):
- input_rgb_image_sized<150>: float((pixel - channel mean) / 256) per R, G, B plane (means from the file);
- con_: cross-correlation, weights (filters, channels, rows, cols), padding as stored (filter/2 at stride 1,
  else 0), bias;
- affine_: the batch norm folded into a per-channel scale and shift (a stored bn_ is folded as dlib does);
- max_pool_ / avg_pool_: windows starting at output*stride - padding, over the valid pixels only (padding
  is 0 in this network); avg_pool_everything: the mean over the whole plane;
- add_prev_: inputs of different shapes are zero-padded at the end (channels, rows, columns) to the larger
  shape before adding (the 3x3 block output and the 4x4 pooled shortcut of the second-last stage);
- fc_no_bias: (N, inputs) @ weights (inputs, outputs); loss_metric returns that output as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotFoundError

CHIP_SIZE = 150
INPUT_NAME = "chips"          # (N, 150, 150, 3) uint8 RGB, as dlib.get_face_chip returns them
OUTPUT_NAME = "descriptors"   # (N, 128) float32
OPSET = 13                    # onnxruntime >= 1.17 and onnx >= 1.14 (the declared floors) both run it
IR_VERSION = 7                # opset 13's IR version


# ---------------------------------------------------------------------------------------- the network
@dataclass(frozen=True)
class Spec:
    """One layer of the C++ network type: `kind` and what the type fixes about it."""

    kind: str                # con, affine, relu, max_pool, avg_pool, fc, tag, skip, add_prev
    filters: int = 0         # con / fc outputs
    size: int = 0            # con / pool window (0 = the whole plane)
    stride: int = 1
    tag: int = 0             # tag / skip / add_prev: which tag


def _block(n: int, stride: int) -> list[Spec]:
    # block = BN<con<N,3,3,1,1, relu<BN<con<N,3,3,stride,stride, SUBNET>>>>>, innermost first
    return [Spec("con", n, 3, stride), Spec("affine"), Spec("relu"), Spec("con", n, 3, 1), Spec("affine")]


def _ares(n: int) -> list[Spec]:
    # relu<add_prev1<block<N,affine,1, tag1<SUBNET>>>>
    return [Spec("tag", tag=1), *_block(n, 1), Spec("add_prev", tag=1), Spec("relu")]


def _ares_down(n: int) -> list[Spec]:
    # relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,affine,2, tag1<SUBNET>>>>>>>
    return [Spec("tag", tag=1), *_block(n, 2), Spec("tag", tag=2), Spec("skip", tag=1),
            Spec("avg_pool", size=2, stride=2), Spec("add_prev", tag=2), Spec("relu")]


def architecture() -> list[Spec]:
    """The layers of dlib's `anet_type` below its loss layer, from the input outwards."""
    layers = [Spec("con", 32, 7, 2), Spec("affine"), Spec("relu"), Spec("max_pool", size=3, stride=2)]
    layers += _ares(32) * 3                                   # alevel4
    layers += _ares_down(64) + _ares(64) * 3                  # alevel3
    layers += _ares_down(128) + _ares(128) * 2                # alevel2
    layers += _ares_down(256) + _ares(256) * 2                # alevel1
    layers += _ares_down(256)                                 # alevel0
    layers += [Spec("avg_pool", size=0, stride=1), Spec("fc", 128)]  # avg_pool_everything, fc_no_bias<128>
    return layers


@dataclass
class Layer:
    """A parsed layer: its spec and what the file says about it."""

    spec: Spec
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    padding: tuple[int, int] = (0, 0)
    relu: bool = False       # con_6's fused relu
    disabled: bool = False   # affine_2 / relu_2


@dataclass
class DlibNet:
    """dlib's face recognition ResNet as read from its `.dat` file."""

    means: tuple[float, float, float]  # R, G, B
    layers: list[Layer]


# ---------------------------------------------------------------------------------------- dlib serialize
class _FormatError(Exception):
    """The stream is not what dlib's serialize would have written for this network."""


class _Reader:
    """dlib's serialize format (dlib/serialize.h): integers as a control byte (byte count in the low 4
    bits, 0x80 = negative) then that many little-endian bytes; floats as an int64 mantissa and an int16
    exponent, both integers; strings as a length and bytes; bools as the characters '0'/'1'; tensors
    (cuda/tensor.h) as version 2, four int64 dimensions and little-endian float32 data."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, count: int) -> memoryview:
        if count < 0 or self.pos + count > len(self.data):
            raise _FormatError(f"file ends at byte {len(self.data)}, wanted {count} more at byte {self.pos}")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise _FormatError(f"bad integer control byte {control:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def floating(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise _FormatError(f"old ASCII float at byte {self.pos}")  # dlib before 2012; never in this model
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= 32000:  # float_details' is_inf / is_ninf / is_nan
            return {32000: np.inf, 32001: -np.inf}.get(exponent, np.nan)
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        length = self.integer()
        if length > 256:
            raise _FormatError(f"implausible string length {length} at byte {self.pos}")
        return bytes(self.take(length)).decode("latin-1")

    def boolean(self) -> bool:
        char = bytes(self.take(1))
        if char not in (b"0", b"1"):
            raise _FormatError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        found = self.integer()
        if found not in allowed:
            raise _FormatError(f"{what} version {found} at byte {self.pos}, expected {allowed}")
        return found

    def label(self, allowed: tuple[str, ...]) -> str:
        found = self.string()
        if found not in allowed:
            raise _FormatError(f"found layer '{found}' at byte {self.pos}, expected {' or '.join(allowed)}")
        return found

    def tensor(self) -> np.ndarray:
        self.version((2,), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        count = math.prod(shape)
        if min(shape) < 0 or count > len(self.data):
            raise _FormatError(f"implausible tensor shape {shape} at byte {self.pos}")
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias_shape(self) -> tuple[int, ...]:
        self.version((1,), "alias_tensor")
        return tuple(self.integer() for _ in range(4))


def _slice(params: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """An alias_tensor view of `params`: `shape`'s elements from `offset`, row-major."""
    flat = params.reshape(-1)
    count = int(np.prod(shape))
    if offset + count > flat.size:
        raise _FormatError(f"parameters hold {flat.size} values, the layer needs {offset + count}")
    return flat[offset:offset + count].reshape(shape)


def _read_con(reader: _Reader, layer: Layer, channels: int) -> None:
    version = reader.label(("con_4", "con_5", "con_6"))
    params = reader.tensor()
    filters, rows, cols = reader.integer(), reader.integer(), reader.integer()
    stride_y, stride_x = reader.integer(), reader.integer()
    layer.padding = (reader.integer(), reader.integer())
    filter_shape, bias_shape = reader.alias_shape(), reader.alias_shape()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.floating()
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    layer.relu = reader.boolean() if version == "con_6" else False
    spec = layer.spec
    expected = (spec.filters, spec.size, spec.size, spec.stride, spec.stride)
    if (filters, rows, cols, stride_y, stride_x) != expected or filter_shape != (filters, channels, rows, cols):
        raise _FormatError(f"con layer {filter_shape} stride {stride_y} where the network has "
                           f"{(spec.filters, channels, spec.size, spec.size)} stride {spec.stride}")
    layer.weights["W"] = _slice(params, 0, filter_shape)
    if use_bias and int(np.prod(bias_shape)):
        layer.weights["B"] = _slice(params, int(np.prod(filter_shape)), (filters,))


def _read_affine(reader: _Reader, layer: Layer, channels: int) -> None:
    version = reader.label(("affine_", "affine_2", "bn_con2"))
    params = reader.tensor()
    gamma_shape, beta_shape = reader.alias_shape(), reader.alias_shape()
    if gamma_shape != (1, channels, 1, 1) or beta_shape != gamma_shape:
        raise _FormatError(f"affine layer of shape {gamma_shape} after {channels} channels")
    gamma, beta = _slice(params, 0, (channels,)), _slice(params, channels, (channels,))
    if version == "bn_con2":
        # A batch norm as trained: fold it as affine_(const bn_&) does, in float32.
        for _ in range(2):  # batch statistics of the last training step
            reader.tensor()
        means, variances = reader.tensor().reshape(-1), reader.tensor().reshape(-1)
        for _ in range(2):  # num_updates, running_stats_window_size
            reader.integer()
        for _ in range(4):
            reader.floating()
        eps = np.float32(reader.floating())
        gamma = gamma / np.sqrt(variances + eps)
        beta = beta - gamma * means
    else:
        mode = reader.integer()
        if mode != 0:  # CONV_MODE: one scale and shift per channel
            raise _FormatError(f"affine layer in mode {mode}, expected conv mode (0)")
        layer.disabled = reader.boolean() if version == "affine_2" else False
    layer.weights["scale"], layer.weights["shift"] = gamma.astype(np.float32), beta.astype(np.float32)


def _read_pool(reader: _Reader, layer: Layer) -> None:
    reader.label(("max_pool_2",) if layer.spec.kind == "max_pool" else ("avg_pool_2",))
    rows, cols, stride_y, stride_x = (reader.integer() for _ in range(4))
    layer.padding = (reader.integer(), reader.integer())
    spec = layer.spec
    if (rows, cols, stride_y, stride_x) != (spec.size, spec.size, spec.stride, spec.stride):
        raise _FormatError(f"{spec.kind} {rows}x{cols} stride {stride_y} where the network has "
                           f"{spec.size}x{spec.size} stride {spec.stride}")


def _read_fc(reader: _Reader, layer: Layer, inputs: int) -> None:
    version = reader.label(("fc_2", "fc_3"))
    outputs, stored_inputs = reader.integer(), reader.integer()
    params = reader.tensor()
    weight_shape, _ = reader.alias_shape(), reader.alias_shape()
    if reader.integer() != 1:  # FC_NO_BIAS
        raise _FormatError("fc layer with a bias, the network's has none")
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.floating()
    if version == "fc_3":
        reader.boolean()  # use_bias, false in FC_NO_BIAS mode
    if (outputs, stored_inputs) != (layer.spec.filters, inputs) or weight_shape[:2] != (inputs, outputs):
        raise _FormatError(f"fc layer {stored_inputs} -> {outputs} where the network has {inputs} -> "
                           f"{layer.spec.filters}")
    layer.weights["W"] = _slice(params, 0, (inputs, outputs))


def _read_details(reader: _Reader, layer: Layer, channels: int) -> int:
    """One layer's own details; returns the channel count after it."""
    kind = layer.spec.kind
    if kind == "con":
        _read_con(reader, layer, channels)
        return layer.spec.filters
    if kind == "affine":
        _read_affine(reader, layer, channels)
    elif kind == "relu":
        if reader.label(("relu_", "relu_2")) == "relu_2":
            layer.disabled = reader.boolean()
    elif kind in ("max_pool", "avg_pool"):
        _read_pool(reader, layer)
    elif kind == "add_prev":
        reader.label(("add_prev_",))
    elif kind == "fc":
        _read_fc(reader, layer, channels)
        return layer.spec.filters
    return channels


def parse(data: bytes) -> DlibNet:
    """Read dlib's face recognition ResNet from the bytes of its `.dat` file (raises `_FormatError`)."""
    reader = _Reader(data)
    reader.version((1,), "add_loss_layer")
    if reader.label(("loss_metric_", "loss_metric_2")) == "loss_metric_2":
        reader.floating(), reader.floating()  # margin, distance threshold: training only
    layers = [Layer(spec) for spec in architecture()]
    # Versions, outermost first: add_layer 1-2 (the layer on the input: 2-3), tag and skip layers 1.
    versions = [0] * len(layers)
    for index in range(len(layers) - 1, -1, -1):
        kind = layers[index].spec.kind
        allowed = (1,) if kind in ("tag", "skip") else (2, 3) if index == 0 else (1, 2)
        versions[index] = reader.version(allowed, f"{kind} layer")
    reader.label(("input_rgb_image_sized",))
    means = (reader.floating(), reader.floating(), reader.floating())
    if (reader.integer(), reader.integer()) != (CHIP_SIZE, CHIP_SIZE):
        raise _FormatError(f"the network's input is not {CHIP_SIZE}x{CHIP_SIZE}")
    channels = 3
    for index, layer in enumerate(layers):  # details, innermost first
        if layer.spec.kind in ("tag", "skip"):
            continue
        channels = _read_details(reader, layer, channels)
        for _ in range(3):  # setup called, gradient stale, output disabled
            reader.boolean()
        reader.tensor(), reader.tensor()  # x_grad, cached_output
        if index == 0:
            reader.tensor()  # grad_final
            if versions[index] == 3:
                reader.integer()  # sample expansion factor
        elif versions[index] == 2:
            reader.tensor()  # params_grad
    if reader.pos != len(reader.data):
        raise _FormatError(f"{len(reader.data) - reader.pos} bytes left after the network")
    return DlibNet(means=means, layers=layers)


def read_dat(path: str | Path) -> DlibNet:
    """`parse` a `.dat` file; a missing, truncated or foreign file is a `ModelNotFoundError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelNotFoundError(f"dlib model file unreadable ({exc.strerror})", path=path) from None
    try:
        return parse(data)
    except (_FormatError, ValueError, IndexError) as exc:
        raise ModelNotFoundError(f"not dlib's face recognition ResNet, or a truncated or corrupt copy ({exc}); "
                                 "reinstall face_recognition_models", path=path) from None


# ---------------------------------------------------------------------------------------- ONNX graph
class _Graph:
    """Builds the ONNX graph node by node, tracking each tensor's static (C, H, W)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        from onnx import helper

        output = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


Shape = tuple[int, int, int]  # channels, rows, columns


def _pad_to(graph: _Graph, tensor: str, shape: Shape, target: Shape) -> str:
    """Zero-pad at the end of each of C, H, W (dlib's add_prev_ on tensors of different shapes)."""
    if shape == target:
        return tensor
    pads = np.array([0, 0, 0, 0, 0, *(t - s for s, t in zip(shape, target, strict=True))], dtype=np.int64)
    return graph.node("Pad", [tensor, graph.constant("pads", pads)], mode="constant")


def _pool_out(size: int, window: int, stride: int, padding: int) -> int:
    return 1 + (size + 2 * padding - window) // stride


def build(net: DlibNet) -> bytes:
    """The ONNX model (serialized bytes) of `net`: input `chips` (N, 150, 150, 3) uint8 RGB, output
    `descriptors` (N, 128) float32; N is dynamic."""
    from onnx import TensorProto, helper

    graph = _Graph()
    pixels = graph.node("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
    means = np.array(net.means, dtype=np.float32).reshape(1, 1, 1, 3)
    # (pixel - mean) / 256 as dlib's input layer computes it; * 1/256 is exact, like / 256
    centred = graph.node("Sub", [pixels, graph.constant("means", means)])
    scaled = graph.node("Mul", [centred, graph.constant("inv256", np.array(1 / 256, dtype=np.float32))])
    current, shape = graph.node("Transpose", [scaled], perm=[0, 3, 1, 2]), (3, CHIP_SIZE, CHIP_SIZE)
    tags: dict[int, tuple[str, Shape]] = {}
    for layer in net.layers:
        spec = layer.spec
        if spec.kind == "tag":
            tags[spec.tag] = (current, shape)
        elif spec.kind == "skip":
            current, shape = tags[spec.tag]
        elif spec.kind == "con":
            pad_y, pad_x = layer.padding
            inputs = [current, graph.constant("W", layer.weights["W"])]
            if "B" in layer.weights:
                inputs.append(graph.constant("B", layer.weights["B"]))
            current = graph.node("Conv", inputs, kernel_shape=[spec.size, spec.size], strides=[spec.stride] * 2,
                                 pads=[pad_y, pad_x, pad_y, pad_x])
            shape = (spec.filters, _pool_out(shape[1], spec.size, spec.stride, pad_y),
                     _pool_out(shape[2], spec.size, spec.stride, pad_x))
            if layer.relu:
                current = graph.node("Relu", [current])
        elif spec.kind == "affine" and not layer.disabled:
            scale = layer.weights["scale"].reshape(1, -1, 1, 1)
            shift = layer.weights["shift"].reshape(1, -1, 1, 1)
            current = graph.node("Add", [graph.node("Mul", [current, graph.constant("scale", scale)]),
                                         graph.constant("shift", shift)])
        elif spec.kind == "relu" and not layer.disabled:
            current = graph.node("Relu", [current])
        elif spec.kind in ("max_pool", "avg_pool") and spec.size == 0:
            op = "GlobalMaxPool" if spec.kind == "max_pool" else "GlobalAveragePool"
            current, shape = graph.node(op, [current]), (shape[0], 1, 1)
        elif spec.kind in ("max_pool", "avg_pool"):
            pad_y, pad_x = layer.padding
            extra = {} if spec.kind == "max_pool" else {"count_include_pad": 0}  # dlib averages valid pixels
            current = graph.node("MaxPool" if spec.kind == "max_pool" else "AveragePool", [current],
                                 kernel_shape=[spec.size, spec.size], strides=[spec.stride] * 2,
                                 pads=[pad_y, pad_x, pad_y, pad_x], **extra)
            shape = (shape[0], _pool_out(shape[1], spec.size, spec.stride, pad_y),
                     _pool_out(shape[2], spec.size, spec.stride, pad_x))
        elif spec.kind == "add_prev":
            other, other_shape = tags[spec.tag]
            target: Shape = (max(shape[0], other_shape[0]), max(shape[1], other_shape[1]),
                             max(shape[2], other_shape[2]))
            current = graph.node("Add", [_pad_to(graph, current, shape, target),
                                         _pad_to(graph, other, other_shape, target)])
            shape = target
        elif spec.kind == "fc":
            flat = graph.node("Flatten", [current], axis=1)
            current = graph.node("MatMul", [flat, graph.constant("fc", layer.weights["W"])])
            shape = (spec.filters, 1, 1)
    graph.nodes[-1].output[0] = OUTPUT_NAME
    model = helper.make_model(
        helper.make_graph(graph.nodes, "dlib_face_recognition_resnet_model_v1",
                          [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", CHIP_SIZE, CHIP_SIZE, 3])],
                          [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", shape[0]])],
                          initializer=graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="castkeep")
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def convert(path: str | Path) -> bytes:
    """The ONNX model bytes of the dlib `.dat` file at `path`."""
    return build(read_dat(path))


def descriptor_session(model: bytes, providers: list[Any] | None = None) -> Any:
    """An onnxruntime session on the converted model: full graph optimisation, `providers` as given
    (default: CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=providers or ["CPUExecutionProvider"])


def describe_chips(session: Any, chips: np.ndarray) -> np.ndarray:
    """(N, 128) float32 descriptors of (N, 150, 150, 3) uint8 RGB chips, in one run."""
    chips = np.ascontiguousarray(chips, dtype=np.uint8)
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 RGB, got {chips.shape}")
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: chips})[0], dtype=np.float32)
