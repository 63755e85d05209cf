"""What every castkeep command shares: model/device options, JSON output, analyzer construction."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

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
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda", "tensorrt", "auto"]), default="cpu", show_default=True,
    help="onnxruntime device for the face models. `auto` uses CUDA when onnxruntime-gpu really has it; "
         "`tensorrt` needs onnxruntime-gpu with TensorRT (its first run per image size builds an engine).")
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
