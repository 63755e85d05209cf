"""What every edit command needs before it touches pixels, checked in `generate`'s order: the characters in
the store and in the adapter's embedding space, the scoring models, the judge; the diffusion weights load
last (`EditSession.load`), after the command has checked its own input (faces, masks, sizes).

Nothing here is new machinery: it is generation/generator.py's checks, per character, with one scorer
(IdentityScorer: ArcFace + dlib, fused by default, generated domain) per character."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import GenerationConfig
from ..generator import (
    CharacterOrIdentity,
    Generator,
    ModelsSpec,
    PathSpec,
    StoreSpec,
    adapter_variant,
    check_scoring_model,
    choose_judge,
    load_recogniser,
    load_scoring_analyzer,
    open_store,
    pack_option,
    resolve_identity,
    scoring_device,
    weights_specs,
)
from ..loading import build_pipeline, check_load_options, resolve_weights
from ..memory import check_offload
from ..runner import AdapterConditioning, Identity, adapter_conditioning, identity_from_store
from ..scoring import IdentityScorer

if TYPE_CHECKING:
    from ...identity.analyzer import FaceAnalyzer

logger = logging.getLogger("castkeep.generation")


@dataclass
class CastMember:
    """One character of an edit: who (its vector in the adapter's space) and the scorer that judges it."""

    identity: Identity
    scorer: IdentityScorer


@dataclass
class EditSession:
    config: GenerationConfig
    cast: list[CastMember]
    analyzer: FaceAnalyzer
    base_model: str
    ip_adapter: str
    device: str = "auto"
    dtype: str = "auto"
    generator: Generator | None = None
    warnings: list[str] = field(default_factory=list)
    offload: str = "none"  # load-time, like device and dtype (generation/memory.py)
    base_config: str | None = None  # the configs of a single-file base model
    vae: str | None = None  # a VAE in place of the base model's
    image_encoder: str | None = None  # FaceID Plus: the CLIP image encoder (None: the default)
    plus_version: str = "auto"
    prepared: dict[int, AdapterConditioning] = field(default_factory=dict)

    def conditioning(self, who: int) -> AdapterConditioning:
        """What the loaded adapter takes for cast member `who` (its vector, a Portrait adapter's reference
        vectors, a Plus adapter's CLIP features of its stored crops), computed once per edit."""
        assert self.generator is not None, "load() first"
        if who not in self.prepared:
            self.prepared[who] = adapter_conditioning(self.generator.loaded, self.config, self.cast[who].identity,
                                                      self.warnings)
        return self.prepared[who]

    def load(self, *, inpaint: bool = False) -> Generator:
        """The diffusion weights, loaded once (or the Generator the caller passed in)."""
        if self.generator is None:
            logger.info("loading %s + %s ...", self.base_model, self.ip_adapter)
            self.generator = Generator(build_pipeline(self.base_model, self.ip_adapter, device=self.device,
                                                      dtype=self.dtype, inpaint=inpaint, offload=self.offload,
                                                      base_config=self.base_config, vae=self.vae,
                                                      image_encoder=self.image_encoder,
                                                      plus_version=self.plus_version))
            self.warnings += self.generator.loaded.warnings
        return self.generator

    def load_settings(self) -> dict[str, Any]:
        """What the loaded pipeline runs on, for the sidecar's settings (as `generate` records them)."""
        assert self.generator is not None, "load() first"
        loaded = self.generator.loaded
        return {"device": loaded.device, "requested_device": loaded.requested_device, "dtype": loaded.dtype,
                "offload": loaded.offload}

    def models_dict(self) -> dict[str, Any]:
        models: dict[str, Any] = {"face_analyzer": self.analyzer.fingerprint}
        if self.generator is not None:
            models.update(self.generator.loaded.models_dict())
        models["conditioning"] = [member.identity.conditioning for member in self.cast] or None
        if self.prepared:
            models["adapter_inputs"] = [self.prepared[who].record if who in self.prepared else None
                                        for who in range(len(self.cast))]
        return models


@contextmanager
def edit_session(characters: Sequence[CharacterOrIdentity], config: GenerationConfig, *,
                 generator: Generator | None = None, base_model: PathSpec | None = None,
                 ip_adapter: PathSpec | None = None, device: str = "auto", dtype: str = "auto",
                 store: StoreSpec = None, models: ModelsSpec = None, conditioning_models: ModelsSpec = None,
                 needs_weights: bool = True, offload: str = "none", base_config: PathSpec | None = None,
                 vae: PathSpec | None = None, image_encoder: PathSpec | None = None,
                 plus_version: str = "auto") -> Iterator[EditSession]:
    """The checked characters and their scorers; nothing slow is loaded but the face models. Without
    `needs_weights` (a Lanczos upscale) the characters are only scored, in the store's primary space.
    `offload`, `base_config`, `vae`, `image_encoder` and `plus_version` are `build_pipeline`'s, used when the
    session loads the weights; a FaceID Plus / Portrait adapter's characters come with their stored crops /
    reference vectors."""
    base, adapter = weights_specs(base_model, ip_adapter)
    config_folder = None if base_config is None else os.fspath(base_config)
    if needs_weights and generator is None:  # a wrong mode or an offload on the CPU fails before any model loads
        check_load_options(device, dtype)
        check_offload(offload, "cpu" if device == "cpu" else None)
    with ExitStack() as stack:
        opened = None
        if any(not isinstance(c, Identity) for c in characters) or (characters and store is not None):
            opened = open_store(stack, store)
            for character in characters:  # an unknown name fails before any weights are looked for
                if not isinstance(character, Identity):
                    opened.get(character)
        # Beside the pipeline's device (a Lanczos upscale loads no pipeline: the CPU).
        analyzer = (generator.scoring_analyzer(models) if generator is not None else
                    load_scoring_analyzer(models, scoring_device(device) if needs_weights else "cpu"))
        identities: list[tuple[Identity, Any]] = []
        if needs_weights:
            weights = (generator.loaded.checkpoint.path if generator is not None
                       else resolve_weights(base, adapter, config_folder))
            space = (generator.conditioning_space(conditioning_models) if generator is not None else
                     _space(weights, conditioning_models))
            variant = adapter_variant(weights, plus_version, generator)
            identities = [resolve_identity(stack, c, opened, space, weights.name, variant) for c in characters]
        else:
            identities = [(c, opened if opened is not None and c.name in opened else None) if isinstance(c, Identity)
                          else (identity_from_store(opened, c), opened) for c in characters]
        cast, warnings = [], []
        recogniser = None
        for identity, own_store in identities:
            check_scoring_model(identity, analyzer, own_store)
            judged, notes = choose_judge(config, identity, analyzer, own_store)
            warnings += notes
            if own_store is not None and recogniser is None:
                recogniser = (generator.recogniser() if generator is not None else
                              load_recogniser(scoring_device(device) if needs_weights else "cpu"))
            cast.append(CastMember(identity, IdentityScorer(
                analyzer, identity.vector, name=identity.name, store=own_store, judge=judged.scorer,
                recogniser=recogniser if own_store is not None else None)))
        yield EditSession(config=config, cast=cast, analyzer=analyzer, base_model=base, ip_adapter=adapter,
                          device=device, dtype=dtype, generator=generator, warnings=warnings, offload=offload,
                          base_config=config_folder, vae=None if vae is None else os.fspath(vae),
                          image_encoder=None if image_encoder is None else os.fspath(image_encoder),
                          plus_version=plus_version)


def _space(weights: Any, conditioning_models: ModelsSpec) -> Any:
    from ..conditioning import conditioning_space

    return conditioning_space(weights, pack_option(conditioning_models))
