"""What one generation run asks for: every per-run knob in one validated dataclass.

Where the weights live and which device/dtype they run on are chosen once, when the pipeline is
loaded (`Generator.from_pretrained` / `build_pipeline`); a config only says what to generate, so one
loaded pipeline serves many configs."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..identity.scorers import SCORERS
from .aspect import resolve_size
from .schedulers import SCHEDULER_NAMES

# Value domains of the load-time options (checked by loading.build_pipeline; the CLI's choices).
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")
PLUS_VERSIONS = ("auto", "v1", "v2")  # FaceID Plus: auto = v2 when the file name says `plusv2` (h94's naming)
LARGEST_NATIVE_SIZE = 1024  # SDXL's; SD1.5's is 512
MAX_SEED = 2**32 - 1  # torch.Generator takes 64-bit seeds; A1111/ComfyUI users know 32-bit ones


@dataclass
class GenerationConfig:
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None  # None → a random base seed, recorded in every sidecar
    steps: int = 30
    guidance: float = 7.5
    id_scale: float = 0.8  # IP-Adapter scale: how strongly the identity conditions the UNet
    lora_scale: float = 1.0  # weight of the FaceID LoRA the checkpoint carries (0 when id_scale is 0)
    s_scale: float = 1.0  # FaceID Plus v2: weight of the CLIP-resampled tokens added to the ID tokens (shortcut)
    width: int | None = None
    height: int | None = None
    aspect: str | None = None
    num_images: int = 1
    scheduler: str = "default"
    best_of: int = 1  # candidates generated up front; the top `num_images` by identity score are kept
    scorer: str = "fused"  # who judges and ranks outputs: dlib or fused (ArcFace only when it did not condition)
    min_score: float | None = None  # regenerate until this many outputs reach this P(same) by `scorer`...
    max_tries: int | None = None  # ...or this many images have been generated in all
    batch_size: int = 1
    vae_tiling: bool | None = None  # None: on for large images (generation/memory.py)
    vae_slicing: bool | None = None  # None: on when a call decodes several images
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prompt or not self.prompt.strip():
            raise ConfigError("the prompt is empty")
        checks = [
            (self.steps >= 1, f"--steps {self.steps} must be at least 1"),
            (self.guidance >= 0, f"--guidance {self.guidance} must be >= 0"),
            (0 <= self.id_scale <= 5, f"--id-scale {self.id_scale} must be between 0 and 5"),
            (0 <= self.lora_scale <= 2, f"--lora-scale {self.lora_scale} must be between 0 and 2"),
            (0 <= self.s_scale <= 5, f"--s-scale {self.s_scale} must be between 0 and 5"),
            (self.num_images >= 1, f"--num-images {self.num_images} must be at least 1"),
            (self.best_of >= 1, f"--best-of {self.best_of} must be at least 1"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size} must be at least 1"),
            (self.seed is None or 0 <= self.seed <= MAX_SEED, f"--seed {self.seed} must be in 0..{MAX_SEED}"),
            (self.min_score is None or 0 <= self.min_score <= 1,
             f"--min-score {self.min_score} must be a probability between 0 and 1 (P(same person) by --scorer)"),
            (self.max_tries is None or self.max_tries >= 1, f"--max-tries {self.max_tries} must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.max_tries is not None and self.max_tries < self.candidates:
            raise ConfigError(f"--max-tries {self.max_tries} is below the {self.candidates} images "
                              f"--num-images/--best-of already ask for")
        if self.scorer not in SCORERS:
            raise ConfigError(f"unknown --scorer {self.scorer!r}: choose one of {', '.join(SCORERS)}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise ConfigError(f"unknown --scheduler {self.scheduler!r}: choose one of {', '.join(SCHEDULER_NAMES)}")
        # Size mistakes surface now, not after a minute of model loading: the largest model's bounds hold
        # for every model (the runner checks the loaded model's own).
        resolve_size(width=self.width, height=self.height, aspect=self.aspect, base=LARGEST_NATIVE_SIZE,
                     model="SDXL, the largest model")
        if self.seed is None:
            self.seed = secrets.randbelow(MAX_SEED + 1)

    @property
    def candidates(self) -> int:
        """Images generated before any retry: best-of-N, and never fewer than the images kept."""
        return max(self.best_of, self.num_images)

    @property
    def budget(self) -> int:
        """Most images one run may generate (retries included)."""
        if self.min_score is None:
            return self.candidates
        return self.max_tries if self.max_tries is not None else max(4 * self.num_images, self.candidates)

    def seed_for(self, attempt: int) -> int:
        """Attempt i uses base seed + i, so any single output can be regenerated alone."""
        assert self.seed is not None  # __post_init__ draws one when none was given
        return (self.seed + attempt) % (MAX_SEED + 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data.update(self.extra)
        return data
