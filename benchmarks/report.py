"""Writing benchmark results: one JSON file per run, plain-text tables, and matplotlib plots
(Agg backend: no display needed)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from ..utils import write_json_atomic


def environment() -> dict[str, Any]:
    """Software versions and core count, so a result can be compared with another machine's."""
    versions: dict[str, Any] = {"python": sys.version.split()[0], "numpy": np.__version__}
    for module in ("onnxruntime", "insightface", "faiss"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # an optional piece missing only drops its version
            pass
    versions["cpu_count"] = os.cpu_count()
    versions["machine"] = platform.machine()
    versions["system"] = platform.system()
    return versions


def save_result(result: dict[str, Any], out_dir: str | os.PathLike, name: str) -> Path:
    """Stamp a finished bench result (software versions, finish time, its own path) and write
    `<out_dir>/<name>.json`."""
    path = Path(out_dir) / f"{name}.json"
    result["environment"] = environment()
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["result_json"] = str(path)
    return write_json_atomic(path, result)


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A fixed-width text table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False)))
        return "  ".join(padded)

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("benchmark plots need matplotlib: pip install 'castkeep[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_roc(curves: dict[str, Any], path: str | os.PathLike, title: str) -> Path:
    """ROC curves (TAR against FAR on a log axis). `curves` maps a label to a metrics.Roc."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    floor, lowest = 1.0, 1.0
    for label, roc in curves.items():
        # Lowest TAR shown: at the smallest measurable FAR, so near-perfect curves stay readable.
        lowest = min(lowest, float(roc.tpr[roc.fpr <= 1.0 / roc.n_impostor + 1e-12].max()))
        eps = 0.5 / roc.n_impostor  # FAR 0 drawn at half the smallest measurable FAR
        floor = min(floor, eps)
        ax.plot(np.maximum(roc.fpr, eps), roc.tpr, label=f"{label} (AUC {roc.auc:.4f})", linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(max(0.0, np.floor((lowest - 0.05) * 20) / 20), 1.005)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save_figure(plt, fig, path)


def plot_heatmap(matrix: np.ndarray, labels: Sequence[str], path: str | os.PathLike, title: str, *,
                 scale: tuple[float, float] = (-0.2, 1.0), value_label: str = "cosine similarity",
                 cmap: str = "viridis") -> Path:
    """A labelled matrix of pair scores; `scale` is the colour range (default: cosine)."""
    plt = _pyplot()
    n = len(labels)
    size = min(4 + 0.35 * n, 20)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    image = ax.imshow(matrix, vmin=scale[0], vmax=scale[1], cmap=cmap)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6, color="white")
    fig.colorbar(image, ax=ax, label=value_label)
    ax.set_title(title)
    return _save_figure(plt, fig, path)


def plot_histogram(series: dict[str, Iterable[float]], path: str | os.PathLike, title: str,
                   threshold: float | None = None, *, xlabel: str = "cosine similarity",
                   bins: int | np.ndarray | None = None) -> Path:
    """Overlaid histograms; `bins` defaults to a fixed cosine range (pass a count for other scales)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    bins = np.linspace(-0.3, 1.0, 40) if bins is None else bins
    for label, values in series.items():
        values = np.asarray(list(values), dtype=float)
        values = values[np.isfinite(values)]  # a run of one output has no pairwise scores (NaN)
        if values.size:
            ax.hist(values, bins=bins, alpha=0.6, label=f"{label} (n={values.size})")
    if threshold is not None:
        ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save_figure(plt, fig, path)
