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
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..errors import ConfigError, StoreError, UnknownSpaceError
from ..landmarks.model_pack import same_space
from ..utils import slug
from .conditioning import ConditioningSpace, conditioning_space
from .config import GenerationConfig
from .loading import DEFAULT_BASE_MODEL, DEFAULT_IP_ADAPTER, LoadedPipeline, build_pipeline, inspect_faceid, resolve_weights
from .provenance.output import Provenance
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
    load_time = sorted({"device", "dtype", "offload"} & set(settings))
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


def scoring_device(device: str) -> str:
    """The onnxruntime device of the face models that score a pipeline's outputs, for the pipeline's torch
    `device` (as asked for, or resolved): beside a CUDA pipeline they run on the pack's CUDA providers where
    onnxruntime has them ("auto": else the CPU, never an error, so a CPU-only onnxruntime still scores);
    beside anything else, on the CPU."""
    if device == "auto":  # as loading.resolve_device resolves it; mps has no onnxruntime provider here
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "auto" if device == "cuda" else "cpu"


def load_scoring_analyzer(models: ModelsSpec, device: str = "cpu") -> FaceAnalyzer:
    """Detection + embedding only: all that scoring an output needs; `device` is onnxruntime's
    (`scoring_device` of the pipeline's)."""
    from ..identity.analyzer import FaceAnalyzer

    return FaceAnalyzer.from_pretrained(models, device=device, dense=False, landmarks_106=False)


def load_recogniser(device: str = "cpu") -> Any:
    """dlib's recogniser, the independent judge of outputs, on `device`'s onnxruntime providers."""
    from ..identity.dlib_recogniser import DlibRecogniser
    from ..landmarks.model_pack import select_providers

    return DlibRecogniser(providers=None if device == "cpu" else select_providers(device))


def check_scoring_model(identity: Identity, analyzer: FaceAnalyzer, store: Store | None = None) -> None:
    """Scores are only meaningful in the space they are compared in: the store's own (primary) space for
    a stored character, the vector's for one given directly."""
    expected = store.fingerprint if store is not None else identity.fingerprint
    if expected and not same_space(expected, analyzer.fingerprint):
        raise StoreError(f"'{identity.name}' is stored with face model {expected} but scoring would use "
                         f"{analyzer.fingerprint}: pass --models with the same pack")


def checked_identity(identity: Identity, space: ConditioningSpace, adapter_name: str) -> Identity:
    """A vector given directly, checked against the adapter's space when its model is known."""
    if identity.conditioning is not None:  # resolved already (the one-call `generate`)
        return identity
    if identity.fingerprint is not None and not space.matches(identity.fingerprint):
        raise UnknownSpaceError(f"the vector given for '{identity.name}' is from {identity.fingerprint}, but "
                                f"{adapter_name} conditions on {space.label()} embeddings")
    conditioning = {**space.to_dict(), "fingerprint": identity.fingerprint}
    return replace(identity, conditioning=conditioning)


def choose_judge(config: GenerationConfig, identity: Identity, analyzer: FaceAnalyzer,
                 store: Store | None) -> tuple[GenerationConfig, list[str]]:
    """The scorer that ranks outputs. ArcFace in the space that conditioned them would reward images
    that fool it, so it is refused; dlib and the fusion need the character's stored face crops, so a
    bare vector falls back to ArcFace with a warning."""
    conditioned_by_scorer = same_space(identity.fingerprint, analyzer.fingerprint)
    if config.scorer == "arcface" and conditioned_by_scorer:
        raise ConfigError(f"--scorer arcface would rank outputs by {analyzer.fingerprint.split(':')[0]}, the model "
                          "whose vector conditioned them: use --scorer fused (default) or dlib")
    if config.scorer != "arcface" and store is None:
        note = " (the model that conditioned them)" if conditioned_by_scorer else ""
        return replace(config, scorer="arcface"), [
            f"'{identity.name}' is not a stored character, so dlib has no face crops to compare with: outputs "
            f"are ranked by ArcFace alone{note}"]
    return config, []


def weights_specs(base_model: PathSpec | None, ip_adapter: PathSpec | None) -> tuple[str, str]:
    return (os.fspath(base_model) if base_model is not None else DEFAULT_BASE_MODEL,
            os.fspath(ip_adapter) if ip_adapter is not None else DEFAULT_IP_ADAPTER)


def _spec(value: PathSpec | None) -> str | None:
    return None if value is None else os.fspath(value)


def pack_option(models: ModelsSpec) -> str | os.PathLike[str] | None:
    """A pack given as a name, a folder or a loaded ModelPack → a name or folder."""
    return models if models is None or isinstance(models, (str, os.PathLike)) else models.path


def open_store(stack: ExitStack, store: Any) -> Store:
    """A Store as given, or the one at a path (None: the default store), opened read-only here.
    Scoring hands the store vectors, never images, so it needs no face models of its own."""
    from ..identity.store import Store

    if isinstance(store, Store):
        return store
    return stack.enter_context(Store.open(store, create=False))


def resolve_identity(stack: ExitStack, character: CharacterOrIdentity, store: Any, space: ConditioningSpace,
             adapter_name: str, variant: str = "faceid") -> tuple[Identity, Store | None]:
    """The identity to generate (its vector in the adapter's space), and the store to score it against
    (if any)."""
    if isinstance(character, Identity):
        opened = None if store is None else open_store(stack, store)
        # Scoring by the store needs the character's own row; a vector from elsewhere is scored by
        # ArcFace cosine only.
        return (checked_identity(character, space, adapter_name),
                opened if opened is not None and character.name in opened else None)
    opened = open_store(stack, store)
    return identity_from_store(opened, character, space, adapter_name, variant), opened


class Generator:
    """A loaded base model + IP-Adapter FaceID, reusable for many scored runs."""

    def __init__(self, loaded: LoadedPipeline) -> None:
        self.loaded = loaded
        self._analyzers: dict[str, FaceAnalyzer] = {}
        self._recogniser: Any = None

    @classmethod
    def from_pretrained(cls, base_model: PathSpec | None = None, ip_adapter: PathSpec | None = None, *,
                        device: str = "auto", dtype: str = "auto", hash_base_model: bool = True,
                        offload: str = "none", base_config: PathSpec | None = None,
                        vae: PathSpec | None = None, image_encoder: PathSpec | None = None,
                        plus_version: str = "auto") -> Generator:
        """Load SD1.5/SDXL (a diffusers folder or Hub id) with FaceID weights (a file, a folder or a Hub
        `repo[/file]`) on `device` (auto: cuda, mps, cpu) in `dtype` (auto: float16 on GPUs); `offload`
        "model"/"sequential" for small GPUs (generation/memory.py). A single-file `base_model` (.safetensors)
        loads with the diffusers configs in `base_config`; `vae` replaces the base model's VAE. FaceID Plus / Plus v2
        checkpoints also load the CLIP `image_encoder` (a folder or Hub id; default h94's choice,
        laion/CLIP-ViT-H-14-laion2B-s32B-b79K); `plus_version` "v1"/"v2" overrides the file name's say."""
        base, adapter = weights_specs(base_model, ip_adapter)
        logger.info("loading %s + %s ...", base, adapter)
        return cls._build(base, adapter, device, dtype, hash_base_model, offload, _spec(base_config), _spec(vae),
                          _spec(image_encoder), plus_version)

    @classmethod
    def _build(cls, base: str, adapter: str, device: str, dtype: str, hash_base_model: bool = True,
               offload: str = "none", base_config: str | None = None, vae: str | None = None,
               image_encoder: str | None = None, plus_version: str = "auto") -> Generator:
        loaded = build_pipeline(base, adapter, device=device, dtype=dtype, hash_base_model=hash_base_model,
                                offload=offload, base_config=base_config, vae=vae, image_encoder=image_encoder,
                                plus_version=plus_version)
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
            self._analyzers[key] = load_scoring_analyzer(models, scoring_device(self.loaded.device))
        return self._analyzers[key]

    def recogniser(self) -> Any:
        """dlib's recogniser, the independent judge of outputs, loaded once."""
        if self._recogniser is None:
            self._recogniser = load_recogniser(scoring_device(self.loaded.device))
        return self._recogniser

    def conditioning_space(self, conditioning_models: ModelsSpec = None) -> ConditioningSpace:
        """The embedding space the loaded adapter takes (see generation/conditioning.py)."""
        return conditioning_space(self.loaded.checkpoint.path, pack_option(conditioning_models))

    def generate(self, character: CharacterOrIdentity, prompt: str | None = None, *,
                 config: GenerationConfig | None = None, store: StoreSpec = None, models: ModelsSpec = None,
                 analyzer: FaceAnalyzer | None = None, conditioning_models: ModelsSpec = None,
                 out_dir: PathSpec | None = None, keep_rejected: bool = False,
                 on_attempt: Callable[[Attempt], None] | None = None, provenance: Provenance | None = None,
                 cancel: Callable[[], bool] | None = None, **settings: Any) -> RunResult:
        """Generate `character` (a stored name, or an `Identity`) from `prompt` and score every output.

        `settings` are `GenerationConfig` fields (negative_prompt, seed, steps, guidance, id_scale,
        aspect/width/height, num_images, scheduler, best_of, min_score, max_tries, batch_size), or pass
        `config=` instead. A name is looked up in `store` (a Store, a folder, or None for the default
        store). The adapter is conditioned on the character's vector in the space it was trained on (known
        checkpoints by file name; else `conditioning_models`, a pack name or folder). Outputs are scored
        with `analyzer`, or the `models` pack (the store's own), and dlib, and ranked by `scorer`
        (a config field: fused by default). Files go to `out_dir` (default `castkeep-out/NAME-TIMESTAMP`),
        each PNG marked as `provenance` says (default: castkeep's invisible watermark, no C2PA signature).
        `cancel`, asked after each batch of attempts, ends the run early with the best of the attempts made.
        """
        config = make_config(prompt, config, settings)
        provenance = provenance if provenance is not None else Provenance()
        provenance.check()
        space = self.conditioning_space(conditioning_models)
        with ExitStack() as stack:
            identity, opened = resolve_identity(stack, character, store, space, self.loaded.checkpoint.path.name,
                                                self.loaded.checkpoint.variant)
            scoring = analyzer if analyzer is not None else self.scoring_analyzer(models)
            check_scoring_model(identity, scoring, opened)
            config, warnings = choose_judge(config, identity, scoring, opened)
            recogniser = self.recogniser() if opened is not None else None
            scorer = IdentityScorer(scoring, identity.vector, name=identity.name, store=opened, judge=config.scorer,
                                    recogniser=recogniser)
            runner = GenerationRunner(self.loaded, scorer, analyzer_fingerprint=scoring.fingerprint,
                                      on_attempt=on_attempt, warnings=warnings, provenance=provenance,
                                      cancel=cancel)
            target = Path(out_dir) if out_dir is not None else default_out_dir(identity.name)
            return runner.run(config, identity, target, keep_rejected=keep_rejected)


def adapter_variant(weights: Path, plus_version: str, generator: Generator | None = None) -> str:
    """The FaceID variant (loading.FACEID_VARIANTS) a run conditions: the loaded `generator`'s, else the one
    the checkpoint's key shapes tell (nothing is loaded), so the characters are read with what it takes."""
    if generator is not None:
        return generator.loaded.checkpoint.variant
    return inspect_faceid(weights, plus_version).variant


def generate(character: CharacterOrIdentity, prompt: str | None = None, *, base_model: PathSpec | None = None,
             ip_adapter: PathSpec | None = None, device: str = "auto", dtype: str = "auto", offload: str = "none",
             base_config: PathSpec | None = None, vae: PathSpec | None = None,
             image_encoder: PathSpec | None = None, plus_version: str = "auto",
             config: GenerationConfig | None = None, store: StoreSpec = None, models: ModelsSpec = None,
             conditioning_models: ModelsSpec = None, out_dir: PathSpec | None = None, keep_rejected: bool = False,
             on_attempt: Callable[[Attempt], None] | None = None, provenance: Provenance | None = None,
             **settings: Any) -> RunResult:
    """Load the pipeline and run one scored generation (see `Generator` to reuse the loaded weights).

    Everything cheap is checked first: the settings, the character in the store and in the adapter's
    embedding space, and that the scoring models are the store's; only then are the diffusion weights
    loaded.
    """
    config = make_config(prompt, config, settings)
    provenance = provenance if provenance is not None else Provenance()
    provenance.check()
    base, adapter = weights_specs(base_model, ip_adapter)
    with ExitStack() as stack:
        if not isinstance(character, Identity):  # an unknown name fails before any weights are looked for
            store = open_store(stack, store)
            store.get(character)
        logger.info("loading %s + %s ...", base, adapter)
        weights = resolve_weights(base, adapter, _spec(base_config))  # finds the files; loads nothing
        space = conditioning_space(weights, pack_option(conditioning_models))
        variant = adapter_variant(weights, plus_version)
        identity, opened = resolve_identity(stack, character, store, space, weights.name, variant)
        analyzer = load_scoring_analyzer(models, scoring_device(device))
        check_scoring_model(identity, analyzer, opened)
        choose_judge(config, identity, analyzer, opened)
        generator = Generator._build(base, adapter, device, dtype, offload=offload, base_config=_spec(base_config),
                                     vae=_spec(vae), image_encoder=_spec(image_encoder), plus_version=plus_version)
        return generator.generate(identity, config=config, store=opened, analyzer=analyzer,
                                  conditioning_models=conditioning_models, out_dir=out_dir,
                                  keep_rejected=keep_rejected, on_attempt=on_attempt, provenance=provenance)
