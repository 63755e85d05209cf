"""What every castkeep command shares: model/device options, JSON output, analyzer construction."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..generation.config import PLUS_VERSIONS
from ..generation.memory import OFFLOADS
from ..utils import dumps


class FiniteFloat(click.ParamType):
    """A float that is a number: click's FLOAT takes `nan` and `inf`, and a NaN threshold judges nothing."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (for scripts).")
models_option = click.option(
    "--models", "models", metavar="PACK", default=None, envvar="CASTKEEP_MODELS", show_envvar=True,
    help="Model pack: an insightface pack name (e.g. buffalo_l, downloaded by insightface when "
         "missing) or a folder of .onnx files.")
FACE_DEVICES = ("cpu", "cuda", "tensorrt", "auto", "openvino")
FACE_DEVICE_HELP = ("Where the face models run: onnxruntime on the CPU, CUDA or TensorRT; `auto` uses CUDA when "
                    "onnxruntime-gpu really has it; `tensorrt` needs onnxruntime-gpu with TensorRT (its first run per "
                    "image size builds an engine); `openvino`: OpenVINO on the CPU, faster on Intel CPUs "
                    "(castkeep[openvino]).")
device_option = click.option("--device", type=click.Choice(FACE_DEVICES), default="cpu", show_default=True,
                             help=FACE_DEVICE_HELP)
face_option = click.option(
    "--face", "face_index", type=click.IntRange(min=0), default=None,
    help="Which face to use when an image holds several (0 = largest, as `analyze` lists them).")


# Characters a terminal may act on rather than show: C0/C1 controls (escape sequences clear the screen, set
# the window title, colour), bidirectional overrides (text that reads other than it is), lone surrogates (a
# non-UTF-8 file name; unwritable). Names, descriptions, tags and file names come from users and imports.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str, *, one_line: bool = False) -> str:
    """`text` safe to print: control and bidi characters as visible escapes (`\\x1b`, `\\u202e`). Newlines
    stay unless `one_line` (a stored string's newline would forge a line of output); tabs stay."""
    text = _UNSAFE.sub(_escape, text)
    return text.replace("\n", "\\n") if one_line else text


def echo(message: str, *, err: bool = False) -> None:
    """click.echo of castkeep's text output, escaped by `terminal_text`."""
    click.echo(terminal_text(message), err=err)


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return models_option(device_option(func))


def emit(data: Any, as_json: bool, text: Callable[[Any], str] | str | None = None) -> None:
    """Print `data` as JSON, or as human text rendered by `text`."""
    if as_json:
        # JSON escapes C0 controls itself; C1, bidi and surrogates as \\u escapes too (the same strings).
        click.echo(_UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", dumps(data)))
    elif text is not None:
        echo(text(data) if callable(text) else text)


def expand_images(arguments: Sequence[Any]) -> list[str]:
    """The images named on a command line: a folder becomes the image files under it (recursively, sorted,
    hidden files and folders skipped, symbolic links to folders not followed); anything else stays as given
    (a file, or PHOTO:N). A folder without images is an ImageError."""
    from ..errors import ImageError
    from ..utils import IMAGE_SUFFIXES

    images: list[str] = []
    for argument in arguments:
        folder = Path(os.fspath(argument))
        if not folder.is_dir():
            images.append(os.fspath(argument))
            continue
        found = []
        for root, folders, files in os.walk(folder):
            folders[:] = [name for name in folders if not name.startswith(".")]
            found += [os.path.join(root, name) for name in files
                      if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise ImageError("folder holds no images (jpg, png, webp, bmp, tiff)", path=folder)
        images += sorted(found)
    return images


def make_analyzer(models: str | None, device: str, **kwargs: Any):
    from ..identity.analyzer import FaceAnalyzer

    return FaceAnalyzer.from_pretrained(models, device=device, **kwargs)


def quiet_library_warnings() -> None:
    """Python warnings from libraries (numpy's RuntimeWarnings on degenerate data, matplotlib's) are not for
    CLI users and would break "one line on stderr": castkeep's own warnings are `warning:` lines from its
    logging. `python -W ...`, PYTHONWARNINGS or CASTKEEP_DEBUG=1 shows them again."""
    if not sys.warnoptions and not os.environ.get("CASTKEEP_DEBUG"):
        warnings.simplefilter("ignore")


def quiet_native_logs() -> None:
    """MediaPipe/TFLite and onnxruntime log to stderr from C++; keep CLI output to our own lines."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")


class _EchoHandler(logging.Handler):
    """castkeep's own log records as CLI lines: warnings always, progress notes unless --json."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(logging.INFO if verbose else logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        echo(f"warning: {message}" if record.levelno >= logging.WARNING else message, err=True)


@contextmanager
def log_to_stderr(logger_name: str, *, verbose: bool) -> Iterator[None]:
    """While a command runs, what a library module logs (e.g. `castkeep.generation`) prints on stderr."""
    logger = logging.getLogger(logger_name)
    handler = _EchoHandler(verbose)
    saved_level, saved_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # no second copy through the root logger's handlers
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate


scorer_option = click.option(
    "--scorer", type=click.Choice(["arcface", "dlib", "fused"]), default="arcface", show_default=True,
    help="Who judges: the model pack's ArcFace (cosine), dlib's ResNet descriptor (another model family, "
         "Euclidean distance), or both fused.")
domain_option = click.option(
    "--domain", type=click.Choice(["auto", "photo", "generated"]), default="auto", show_default=True,
    help="Which calibration the verdict and P(same) use: real photos, or images from a generator (whose "
         "genuine pairs score lower). auto: generated when an image carries generator metadata (castkeep, "
         "A1111, ComfyUI or InvokeAI PNG chunks), else photo.")


def verdict_text(result: dict[str, Any]) -> str:
    """One scorer's judgement as a line: `fused  log-odds 3.21 (threshold 0.00, generated)  P(same) 0.96  same person`."""
    return (f"{result['scorer']:<8} {result['metric']} {result['score']:.4f} "
            f"(threshold {result['threshold']:.2f}, {result['domain']})  P(same) {result['probability']:.2f}  "
            f"{'same person' if result['same'] else 'different people'}")


# ---------------------------------------------------------------------------------- diffusion weights
# The load-time and memory options of every command that loads the diffusion pipeline (generate, the edit
# commands, storyboard): one definition, so the help texts and choices cannot drift apart.
base_config_option = click.option(
    "--base-config", default=None, metavar="DIR",
    help="For a single-file --base-model (.safetensors): a diffusers folder of the same architecture whose "
         "configs convert it [default: the SD1.5/SDXL reference configs from the Hugging Face cache].")
vae_option = click.option(
    "--vae", default=None, metavar="ID|DIR|FILE",
    help="A VAE in place of the base model's: a diffusers folder, a .safetensors file or a Hub id.")
lora_scale_option = click.option(
    "--lora-scale", type=click.FloatRange(0, 2), default=1.0, show_default=True,
    help="Weight of the FaceID LoRA the checkpoint carries (0.6-0.7 often follows the prompt better).")


offload_option = click.option(
    "--offload", type=click.Choice(OFFLOADS), default="none", show_default=True,
    help="Small GPUs: keep weights in CPU RAM and move each model (model) or each layer (sequential, "
         "least memory, slowest) to the GPU as it runs.")
vae_tiling_option = click.option(
    "--vae-tiling/--no-vae-tiling", default=None,
    help="Decode in tiles (less memory for large images) [default: on above 2x the model's native pixels].")
vae_slicing_option = click.option(
    "--vae-slicing/--no-vae-slicing", default=None,
    help="Decode a batch one image at a time [default: on with --batch-size > 1].")
# FaceID Plus / Plus v2 / Portrait (generation/plus_conditioning.py): generate, storyboard and the edit commands.
image_encoder_option = click.option(
    "--image-encoder", default=None, metavar="ID|DIR",
    help="FaceID Plus / Plus v2 only: the CLIP image encoder for the character's face crops, a transformers "
         "folder (config.json + weights) or a Hub id [default: laion/CLIP-ViT-H-14-laion2B-s32B-b79K, "
         "the one h94's model card names].")
plus_version_option = click.option(
    "--plus-version", type=click.Choice(PLUS_VERSIONS), default="auto", show_default=True,
    help="FaceID Plus checkpoints: v2 turns diffusers' shortcut on (h94's card: shortcut=True for v2). "
         "auto: v2 when the file name contains 'plusv2'.")
s_scale_option = click.option(
    "--s-scale", type=click.FloatRange(0, 5), default=1.0, show_default=True,
    help="FaceID Plus v2: weight of the face-crop (CLIP) tokens added to the identity tokens (shortcut).")


def pipeline_load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--base-config, --vae and --offload: how the weights load (once per run; storyboard's)."""
    for option in reversed([base_config_option, vae_option, offload_option]):
        func = option(func)
    return func


def plus_load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--image-encoder and --plus-version: what a FaceID Plus checkpoint loads with (generate, storyboard, edits)."""
    for option in reversed([image_encoder_option, plus_version_option]):
        func = option(func)
    return func
