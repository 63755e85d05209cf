"""The Python entry point for scored generation, diffusers-style: load once, generate many times.

    generator = Generator.from_pretrained("models/sd15", "models/faceid/ip-adapter-faceid_sd15.bin")
    with Store.open("cast") as store:
        run = generator.generate("Mara", "portrait, city at night", store=store, num_images=4, best_of=12)

Where the weights live and the device/dtype they run on are given once, to `from_pretrained`; what to
generate (prompt, seed, id_scale, best-of, ...) is a `GenerationConfig`, per run. `generate()` is the
one-call form the CLI uses: it finds the character and the scoring models *before* loading the
(slow) pipeline, so a typo in a name fails in a second, not after a minute.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..errors import StoreError
from ..utils import slug
from .config import GenerationConfig
from .loading import DEFAULT_BASE_MODEL, DEFAULT_IP_ADAPTER, LoadedPipeline, build_pipeline
from .runner import Attempt, GenerationRunner, Identity, RunResult, identity_from_store
from .scoring import IdentityScorer

if TYPE_CHECKING:
    from ..identity.analyzer import FaceAnalyzer
    from ..identity.store import Store
    from ..landmarks.model_pack import ModelPack

logger = logging.getLogger(__name__)

# Who to generate: a stored character's name, or an Identity (a name and a vector given directly).
CharacterOrIdentity = Union[str, Identity]
PathSpec = Union[str, "os.PathLike[str]"]  # a local path, or a Hugging Face id where one is allowed
StoreSpec = Union["Store", str, "os.PathLike[str]", None]  # a Store, its folder, or None: the default
ModelsSpec = Union[str, "os.PathLike[str]", "ModelPack", None]  # face model pack: name, folder or loaded
OUT_ROOT = Path("castkeep-out")


def default_out_dir(name: str) -> Path:
    """`castkeep-out/<name>-<YYYYmmdd-HHMMSS>`: a new folder per run, named after the character."""
    return OUT_ROOT / (slug(name, fallback="character") + datetime.now().strftime("-%Y%m%d-%H%M%S"))


def make_config(prompt: str | None, config: GenerationConfig | None, settings: dict[str, Any]) -> GenerationConfig:
    """A config from either a ready `GenerationConfig` or a prompt plus keyword settings."""
    load_time = sorted({"device", "dtype"} & set(settings))
    if load_time:  # a common slip: they belong to the loaded pipeline, not to one run
        raise TypeError(f"{', '.join(load_time)} is chosen once, when the weights load: "
                        "Generator.from_pretrained(..., device=..., dtype=...)")
    if config is None:
        if prompt is None:
            raise TypeError("generate() needs a prompt (or config=GenerationConfig(...))")
        return GenerationConfig(prompt=prompt, **settings)
    if prompt is not None or settings:
        raise TypeError("pass either config=GenerationConfig(...) or a prompt and settings, not both")
    return config


def load_scoring_analyzer(models: ModelsSpec) -> FaceAnalyzer:
    """Detection + embedding only: all that scoring an output needs."""
    from ..identity.analyzer import FaceAnalyzer

    return FaceAnalyzer.from_pretrained(models, dense=False, landmarks_106=False)


def check_scoring_model(identity: Identity, analyzer: FaceAnalyzer) -> None:
    """Scores are only meaningful in the embedding space the character was registered in."""
    if identity.fingerprint and identity.fingerprint != analyzer.fingerprint:
        raise StoreError(f"'{identity.name}' was registered with face model {identity.fingerprint} but "
                         f"scoring would use {analyzer.fingerprint}: pass --models with the same pack")


def _open_store(stack: ExitStack, store: Any) -> Store:
    """A Store as given, or the one at a path (None: the default store), opened read-only here.
    Scoring hands the store vectors, never images, so it needs no face models of its own."""
    from ..identity.store import Store

    if isinstance(store, Store):
        return store
    return stack.enter_context(Store.open(store, create=False))


def _resolve(stack: ExitStack, character: CharacterOrIdentity, store: Any) -> tuple[Identity, Store | None]:
    """The identity to generate, and the store to score leakage against (if any)."""
    if isinstance(character, Identity):
        opened = None if store is None else _open_store(stack, store)
        # Leakage needs the character's own row; a vector from elsewhere is scored by cosine only.
        return character, (opened if opened is not None and character.name in opened else None)
    opened = _open_store(stack, store)
    return identity_from_store(opened, character), opened


class Generator:
    """A loaded base model + IP-Adapter FaceID, reusable for many scored runs."""

    def __init__(self, loaded: LoadedPipeline) -> None:
        self.loaded = loaded
        self._analyzers: dict[str, FaceAnalyzer] = {}

    @classmethod
    def from_pretrained(cls, base_model: PathSpec | None = None, ip_adapter: PathSpec | None = None, *,
                        device: str = "auto", dtype: str = "auto", hash_base_model: bool = True) -> Generator:
        """Load SD1.5/SDXL (a diffusers folder or Hub id) with FaceID weights (a file, a folder or a Hub
        `repo[/file]`) on `device` (auto: cuda, mps, cpu) in `dtype` (auto: float16 on GPUs)."""
        base = os.fspath(base_model) if base_model is not None else DEFAULT_BASE_MODEL
        adapter = os.fspath(ip_adapter) if ip_adapter is not None else DEFAULT_IP_ADAPTER
        logger.info("loading %s + %s ...", base, adapter)
        loaded = build_pipeline(base, adapter, device=device, dtype=dtype, hash_base_model=hash_base_model)
        for message in loaded.warnings:
            logger.warning(message)
        return cls(loaded)

    @property
    def pipe(self) -> Any:
        """The diffusers pipeline itself."""
        return self.loaded.pipe

    @property
    def device(self) -> str:
        return self.loaded.device

    @property
    def dtype(self) -> str:
        return self.loaded.dtype

    def scoring_analyzer(self, models: ModelsSpec = None) -> FaceAnalyzer:
        """The face models that score outputs, loaded once per pack."""
        key = str(getattr(models, "path", models))
        if key not in self._analyzers:
            self._analyzers[key] = load_scoring_analyzer(models)
        return self._analyzers[key]

    def generate(self, character: CharacterOrIdentity, prompt: str | None = None, *,
                 config: GenerationConfig | None = None, store: StoreSpec = None, models: ModelsSpec = None,
                 analyzer: FaceAnalyzer | None = None, out_dir: PathSpec | None = None, keep_rejected: bool = False,
                 on_attempt: Callable[[Attempt], None] | None = None, **settings: Any) -> RunResult:
        """Generate `character` (a stored name, or an `Identity`) from `prompt` and score every output.

        `settings` are `GenerationConfig` fields (negative_prompt, seed, steps, guidance, id_scale,
        aspect/width/height, num_images, scheduler, best_of, min_score, max_tries, batch_size), or pass
        `config=` instead. A name is looked up in `store` (a Store, a folder, or None for the default
        store). Outputs are scored with `analyzer`, or the `models` pack (the one the character was
        registered with). Files go to `out_dir` (default `castkeep-out/NAME-TIMESTAMP`).
        """
        config = make_config(prompt, config, settings)
        with ExitStack() as stack:
            identity, opened = _resolve(stack, character, store)
            scoring = analyzer if analyzer is not None else self.scoring_analyzer(models)
            check_scoring_model(identity, scoring)
            scorer = IdentityScorer(scoring, identity.vector, name=identity.name, store=opened)
            runner = GenerationRunner(self.loaded, scorer, analyzer_fingerprint=scoring.fingerprint,
                                      on_attempt=on_attempt)
            target = Path(out_dir) if out_dir is not None else default_out_dir(identity.name)
            return runner.run(config, identity, target, keep_rejected=keep_rejected)


def generate(character: CharacterOrIdentity, prompt: str | None = None, *, base_model: PathSpec | None = None,
             ip_adapter: PathSpec | None = None, device: str = "auto", dtype: str = "auto",
             config: GenerationConfig | None = None, store: StoreSpec = None, models: ModelsSpec = None,
             out_dir: PathSpec | None = None, keep_rejected: bool = False,
             on_attempt: Callable[[Attempt], None] | None = None, **settings: Any) -> RunResult:
    """Load the pipeline and run one scored generation (see `Generator` to reuse the loaded weights).

    Everything cheap is checked first: the settings, the character in the store, and that the scoring
    models are the ones it was registered with; only then are the diffusion weights loaded.
    """
    config = make_config(prompt, config, settings)
    with ExitStack() as stack:
        identity, opened = _resolve(stack, character, store)
        analyzer = load_scoring_analyzer(models)
        check_scoring_model(identity, analyzer)
        generator = Generator.from_pretrained(base_model, ip_adapter, device=device, dtype=dtype)
        return generator.generate(identity, config=config, store=opened, analyzer=analyzer, out_dir=out_dir,
                                  keep_rejected=keep_rejected, on_attempt=on_attempt)
