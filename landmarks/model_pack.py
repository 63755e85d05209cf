"""Finding and loading insightface-style model packs (a folder of ONNX models) on onnxruntime.

Resolution follows insightface: a pack *name* lives in `<root>/models/<name>` (root defaults to
`~/.insightface`) and is downloaded there by insightface when missing (buffalo_l for real users);
a *folder* path is used as it is. `CASTKEEP_MODELS` points at a pack folder, or at a root that holds
pack folders, and wins over the default so everything works offline from local paths.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelNotFoundError
from ..utils import file_sha256

logger = logging.getLogger(__name__)

DEFAULT_PACK = "buffalo_l"
DEFAULT_ROOT = "~/.insightface"
ENV_MODELS = "CASTKEEP_MODELS"

# Where each known pack comes from, and under which terms (shown by `castkeep doctor`).
PACK_LICENSES = {
    "buffalo_l": "InsightFace pretrained models: non-commercial research use only",
    "buffalo_m": "InsightFace pretrained models: non-commercial research use only",
    "buffalo_s": "InsightFace pretrained models: non-commercial research use only",
    "buffalo_sc": "InsightFace pretrained models: non-commercial research use only",
    "antelopev2": "InsightFace pretrained models: non-commercial research use only",
}
# The pack names insightface's model zoo downloads; any other name must be found locally.
INSIGHTFACE_PACKS = frozenset(PACK_LICENSES)
DEFAULT_LICENSE = "InsightFace-format pack: check its source's terms (InsightFace's own are non-commercial)"


def _is_pack_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.onnx"))


def resolve_pack_dir(pack: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None,
                     download: bool = True) -> Path:
    """Return the folder holding the pack's ONNX files.

    `pack` is a folder path or a pack name. With no pack, `CASTKEEP_MODELS` is used, else buffalo_l.
    """
    env = os.environ.get(ENV_MODELS)
    if pack is None and env:
        env_path = Path(env).expanduser()
        if _is_pack_dir(env_path):
            return env_path.resolve()
        candidates = sorted(p for p in env_path.glob("*") if _is_pack_dir(p)) if env_path.is_dir() else []
        preferred = [p for p in candidates if p.name == DEFAULT_PACK]
        if preferred or candidates:
            return (preferred or candidates)[0].resolve()
        raise ModelNotFoundError(f"{ENV_MODELS}={env} holds no model pack (a folder of .onnx files)")
    pack = DEFAULT_PACK if pack is None else pack
    direct = Path(os.fspath(pack)).expanduser()
    if _is_pack_dir(direct):
        return direct.resolve()
    if os.sep in os.fspath(pack) or direct.exists():
        raise ModelNotFoundError(f"model pack folder {direct} has no .onnx files")
    name = os.fspath(pack)
    roots = [Path(root).expanduser()] if root else []
    env_pack = False
    if env and Path(env).expanduser().is_dir():
        # CASTKEEP_MODELS may name a root of packs, or one pack: then its siblings are the other packs, and
        # a download goes to insightface's own root, never inside that pack's folder.
        env_path = Path(env).expanduser()
        env_pack = _is_pack_dir(env_path)
        roots.append(env_path.parent if env_pack else env_path)
    roots.append(Path(DEFAULT_ROOT).expanduser())
    for base in roots:
        for candidate in (base / "models" / name, base / name):
            if _is_pack_dir(candidate):
                return candidate.resolve()
    if not download or name not in INSIGHTFACE_PACKS:  # only insightface's own packs can be downloaded
        raise ModelNotFoundError(_missing_pack_message(name, roots))
    if env_pack and not root:
        roots = [roots[-1], *roots[:-1]]  # insightface's root first: where the download goes
    made = [folder for folder in (roots[0] / "models" / name, roots[0] / "models", roots[0]) if not folder.exists()]
    try:
        from insightface.utils.storage import ensure_available

        with contextlib.redirect_stdout(sys.stderr):  # insightface print()s the download path
            folder = Path(ensure_available("models", name, root=os.fspath(roots[0])))
    except Exception as exc:  # network errors, bad zip: all mean "not here"
        for empty in made:  # a failed download leaves no folders behind
            with contextlib.suppress(OSError):
                empty.rmdir()
        raise ModelNotFoundError(f"{_missing_pack_message(name, roots)} (download failed: "
                                 f"{type(exc).__name__})") from None
    nested = folder / name
    if not _is_pack_dir(folder) and _is_pack_dir(nested):
        folder = nested
    if not _is_pack_dir(folder):
        raise ModelNotFoundError(_missing_pack_message(name, roots))
    return folder.resolve()


def _missing_pack_message(name: str, roots: Sequence[Path]) -> str:
    where = ", ".join(str(base / "models" / name) for base in roots)
    return (f"model pack '{name}' not found (looked in {where}): put its .onnx files in "
            f"{roots[0] / 'models' / name}, or point {ENV_MODELS} / --models at a pack folder")


def select_providers(device: str = "cpu") -> list[str]:
    """onnxruntime providers for a device name: cpu, cuda, tensorrt or auto (CUDA where onnxruntime has it).
    TensorRT is only used when asked for: its first run builds an engine per input shape (minutes)."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    device = device.lower()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "tensorrt":
        if "TensorrtExecutionProvider" in available:
            return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        raise ModelNotFoundError("TensorRT was requested but onnxruntime has no TensorrtExecutionProvider "
                                 "(onnxruntime-gpu with TensorRT libraries installed)")
    if device in ("cuda", "gpu", "auto"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "auto":
            return ["CPUExecutionProvider"]
        raise ModelNotFoundError(
            "CUDA was requested but onnxruntime has no CUDAExecutionProvider "
            "(install castkeep[gpu], i.e. onnxruntime-gpu, in place of onnxruntime)")
    raise ModelNotFoundError(f"unknown device '{device}' (use cpu, cuda, tensorrt, auto or openvino)")


ENV_THREADS = "CASTKEEP_ORT_THREADS"
OPENVINO = "openvino"  # the device name that runs the face models on OpenVINO instead of onnxruntime


def env_threads() -> int | None:
    """Intra-op threads from `CASTKEEP_ORT_THREADS`, or None when it is not set."""
    threads = os.environ.get(ENV_THREADS, "").strip()
    if not threads:
        return None
    if not threads.isdigit() or int(threads) < 1:
        raise ConfigError(f"{ENV_THREADS}={threads!r} is not a number of threads")
    return int(threads)


def session_options(threads: int | None = None) -> Any:
    """The onnxruntime session options every castkeep face model runs with.

    Spinning is off: by default idle onnxruntime threads busy-wait for the next operator, which on a
    machine with few cores starves the Python work between model calls (decoding, alignment, SCRFD's
    box decoding) and other processes; measured on 2 cores, `bench throughput` ran 1.4-3x faster
    without it. Intra-op threads default to onnxruntime's choice (one per physical core);
    `threads`, else `CASTKEEP_ORT_THREADS`, sets them (e.g. 1 per process when running several processes)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    threads = threads or env_threads()
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


@dataclass
class ModelPack:
    """The models of one insightface pack, loaded lazily through insightface's model_zoo router."""

    path: Path
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    runtime: str = "onnxruntime"  # or "openvino" (`--device openvino`): which library runs the models
    threads: int | None = None  # CPU threads per model run (None: CASTKEEP_ORT_THREADS, else the runtime's choice)
    _models: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_pretrained(cls, pack: str | os.PathLike | None = None, *, device: str = "cpu",
                        root: str | os.PathLike | None = None, download: bool = True,
                        threads: int | None = None) -> ModelPack:
        """A pack's models on `device`: an onnxruntime device (`select_providers`), or `openvino`, OpenVINO
        on the CPU (faster than onnxruntime's CPU provider on Intel CPUs; castkeep[openvino])."""
        path = resolve_pack_dir(pack, root=root, download=download)
        if device.lower() == OPENVINO:
            from .openvino_runtime import require_openvino

            require_openvino()  # a missing package is one line now, not at the first model
            return cls(path=path, providers=[], runtime=OPENVINO, threads=threads)
        return cls(path=path, providers=select_providers(device), threads=threads)

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def _routed(self) -> dict[str, Path]:
        """Which ONNX file serves which task, decided by insightface's router (first file wins)."""
        import onnx

        tasks: dict[str, Path] = {}
        for onnx_file in sorted(self.path.glob("*.onnx")):
            task = _task_of(onnx, onnx_file)
            if task and task not in tasks:
                tasks[task] = onnx_file
        return tasks

    def has(self, task: str) -> bool:
        return task in self._routed

    def model_file(self, task: str) -> Path:
        try:
            return self._routed[task]
        except KeyError:
            raise ModelNotFoundError(f"model pack {self.path} has no {task} model") from None

    def model(self, task: str) -> Any:
        """The insightface model object for a task: detection, recognition or landmark_2d_106."""
        if task not in self._models:
            import onnxruntime
            from insightface.model_zoo import model_zoo

            onnxruntime.set_default_logger_severity(3)
            threads = self.threads or env_threads()
            # insightface 0.7.x print()s "Applied providers: ..." on stdout, which would corrupt --json
            # output; what really runs is reported by active_providers() instead.
            with contextlib.redirect_stdout(io.StringIO()):
                if self.runtime == OPENVINO:
                    from .openvino_runtime import load_model

                    model = load_model(self.model_file(task), task, threads=threads)
                else:
                    # The router itself, not model_zoo.get_model: insightface 0.7.x's get_model drops every
                    # keyword but the providers, so the session options (no spinning, the threads) were lost.
                    router = model_zoo.ModelRouter(os.fspath(self.model_file(task)))
                    model = router.get_model(providers=self.providers, sess_options=session_options(threads))
            if model is None or model.taskname != task:
                raise ModelNotFoundError(f"{self.model_file(task)} is not a {task} model")
            self._models[task] = model
        return self._models[task]

    def active_providers(self) -> dict[str, list[str]]:
        """Providers each loaded session really runs on (onnxruntime-gpu falls back silently)."""
        return {task: list(model.session.get_providers()) for task, model in self._models.items()}

    @cached_property
    def recognition_sha256(self) -> str:
        return file_sha256(self.model_file("recognition"))

    @property
    def fingerprint(self) -> str:
        """Names the embedding space, readably: `pack:recognition-file:sha256-prefix`. Whether two
        fingerprints are one space is `same_space`'s call (the content hash), never string equality."""
        return f"{self.name}:{self.model_file('recognition').name}:{self.recognition_sha256[:16]}"

    @property
    def license(self) -> str:
        return PACK_LICENSES.get(self.name, DEFAULT_LICENSE)


_SHA_PREFIX = re.compile(r"[0-9a-f]{8,64}")


def same_space(a: str | None, b: str | None) -> bool:
    """Whether two model fingerprints name one embedding space: the same recogniser weights, decided by
    the sha256 part of `pack:recognition-file:sha256-prefix`, so the same files in a renamed folder (or
    under another file name) stay the same space. Fingerprints of another form must be equal."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    digest_a, digest_b = a.rsplit(":", 2)[-1], b.rsplit(":", 2)[-1]
    return (a.count(":") >= 2 and b.count(":") >= 2 and _SHA_PREFIX.fullmatch(digest_a) is not None
            and digest_a == digest_b)


def _task_of(onnx: Any, onnx_file: Path) -> str | None:
    """The task insightface's ModelRouter would assign, read from the graph without a session."""
    try:
        graph = onnx.load(os.fspath(onnx_file), load_external_data=False).graph
    except Exception:
        return None
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        return None
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(graph.output) >= 5:
        return "detection"
    if len(dims) == 4 and dims[2] == dims[3] == 192:
        out = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
        return "landmark_3d_68" if out and out[-1] >= 3000 else "landmark_2d_106"
    if len(dims) == 4 and dims[2] == dims[3] == 96:
        return "genderage"
    if len(inputs) == 2:
        return "inswapper"
    if len(dims) == 4 and dims[2] == dims[3] and dims[2] >= 112 and dims[2] % 16 == 0:
        return "recognition"
    return None


def available_packs(roots: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Pack folders found locally (for `castkeep doctor`)."""
    found: list[Path] = []
    bases = [Path(r).expanduser() for r in roots]
    env = os.environ.get(ENV_MODELS)
    if env:
        bases.append(Path(env).expanduser())
    bases.append(Path(DEFAULT_ROOT).expanduser() / "models")
    for base in bases:
        if _is_pack_dir(base):
            found.append(base.resolve())
        elif base.is_dir():
            found.extend(p.resolve() for p in sorted(base.iterdir()) if _is_pack_dir(p))
    return list(dict.fromkeys(found))
