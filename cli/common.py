"""What every castkeep command shares: model/device options, JSON output, analyzer construction."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..utils import dumps

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (for scripts).")
models_option = click.option(
    "--models", "models", metavar="PACK", default=None, envvar="CASTKEEP_MODELS", show_envvar=True,
    help="Model pack: an insightface pack name (e.g. buffalo_l, downloaded by insightface when "
         "missing) or a folder of .onnx files.")
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
    help="onnxruntime device. `auto` uses CUDA when onnxruntime-gpu really has it.")
face_option = click.option(
    "--face", "face_index", type=click.IntRange(min=0), default=None,
    help="Which face to use when an image holds several (0 = largest, as `analyze` lists them).")


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return models_option(device_option(func))


def emit(data: Any, as_json: bool, text: Callable[[Any], str] | str | None = None) -> None:
    """Print `data` as JSON, or as human text rendered by `text`."""
    if as_json:
        click.echo(dumps(data))
    elif text is not None:
        click.echo(text(data) if callable(text) else text)


def make_analyzer(models: str | None, device: str, **kwargs: Any):
    from ..identity.analyzer import FaceAnalyzer

    return FaceAnalyzer.from_pretrained(models, device=device, **kwargs)


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
        click.echo(f"warning: {message}" if record.levelno >= logging.WARNING else message, err=True)


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
