"""Where provenance meets an output file: the watermark goes into the pixels (`Provenance.mark`), the
sidecar (with its `provenance` record) into the `castkeep` chunk, and the C2PA manifest is signed over the
finished PNG, so the credentials cover every byte, text chunks included (`Provenance.save_png`).

Marking and saving are apart so that the mark can be made where it costs least: a storyboard's background
writer marks and saves while the pipeline makes the next images, a Ray worker marks its own takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ...utils import write_bytes_atomic
from ..metadata import png_bytes
from .credentials import C2paCredentials, output_manifest
from .watermark import METHOD, PAYLOAD, check_available, embed_watermark, watermark_record


@dataclass(frozen=True)
class MarkedImage:
    """An image as it will be saved: carrying castkeep's watermark when `watermark` (its sidecar record)
    says `applied`; `watermark` is None when the run asked for none."""

    image: Image.Image
    watermark: dict[str, Any] | None


@dataclass(frozen=True)
class Provenance:
    """What every output carries: castkeep's invisible watermark (on unless `watermark=False`) and, with
    `credentials`, signed C2PA Content Credentials."""

    watermark: bool = True
    credentials: C2paCredentials | None = None

    def check(self) -> None:
        """MissingDependencyError before any model loads when the watermark's package is missing."""
        if self.watermark:
            check_available()

    def summary(self) -> dict[str, Any]:
        """What a run's summary.json says its outputs carry."""
        return {"watermark": {"method": METHOD, "payload": PAYLOAD.hex()} if self.watermark else None,
                "c2pa": None if self.credentials is None else self.credentials.record()}

    def mark(self, image: Image.Image) -> MarkedImage:
        """`image` with castkeep's watermark (unless this provenance has none, or the image is too small
        to carry one: the record says so)."""
        record = watermark_record(image) if self.watermark else None
        if record is not None and record["applied"]:
            image = embed_watermark(image)
        return MarkedImage(image, record)

    def save_png(self, image: Image.Image | MarkedImage, path: Path, parameters: str,
                 sidecar: dict[str, Any]) -> dict[str, Any]:
        """Write `image` to `path` atomically, marked (a MarkedImage is saved as it is, a plain image is
        marked first); returns the sidecar as embedded, with its `provenance` record (write the same beside
        the image)."""
        marked = image if isinstance(image, MarkedImage) else self.mark(image)
        sidecar = {**sidecar, "provenance": {
            "watermark": marked.watermark, "c2pa": None if self.credentials is None else self.credentials.record()}}
        data = png_bytes(marked.image, parameters, sidecar)
        if self.credentials is not None:
            data = self.credentials.sign_png(data, output_manifest(path.name, sidecar))
        write_bytes_atomic(path, data)
        return sidecar
