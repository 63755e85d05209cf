"""Build a Stable Diffusion (SD1.5 or SDXL) pipeline with an IP-Adapter FaceID checkpoint loaded.

Base models and FaceID weights are resolved to local files first (a folder or file the user gave,
or the Hugging Face cache), then loaded with diffusers' own loaders: `from_pretrained(folder)` and
`load_ip_adapter(..., image_encoder_folder=None)`; FaceID Plus / Plus v2 also get transformers'
`CLIPVisionModelWithProjection` (resolved the same way) for the character's face crops. When local paths
are given nothing touches the network. Every way of failing to find weights becomes one `ModelNotFoundError` saying what to
download and where to put it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, GenerationError, ModelNotFoundError
from .config import DEVICES, DTYPES, PLUS_VERSIONS
from .memory import check_offload, place_pipeline
from .model_hash import cached_sha256
from .plus_conditioning import guard_plus_projection
from .single_file import is_single_file, load_single_file_pipeline, load_vae, single_file_config

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_IP_ADAPTER = "h94/IP-Adapter-FaceID"
# Plain FaceID checkpoint per architecture in the h94/IP-Adapter-FaceID repository.
FACEID_FILES = {"sd15": "ip-adapter-faceid_sd15.bin", "sdxl": "ip-adapter-faceid_sdxl.bin"}
PIPELINE_KINDS = {"StableDiffusionPipeline": "sd15", "StableDiffusionXLPipeline": "sdxl"}
# Inpainting checkpoints (9-channel UNets): loaded only for the edit commands (`build_pipeline(inpaint=True)`).
INPAINT_KINDS = {"StableDiffusionInpaintPipeline": "sd15", "StableDiffusionXLInpaintPipeline": "sdxl"}
# FaceID Plus / Plus v2: h94's model card loads this CLIP ViT-H/14 image encoder for them.
DEFAULT_IMAGE_ENCODER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
_ENCODER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# What castkeep conditions: plain FaceID (one ArcFace vector), Plus (+ CLIP of the face crop, shortcut off), Plus v2
# (shortcut on), Portrait (one token group per reference vector, no LoRA).
FACEID_VARIANTS = ("faceid", "faceid-plus", "faceid-plusv2", "faceid-portrait")
PLUS_VARIANTS = ("faceid-plus", "faceid-plusv2")  # those that also take CLIP features of the face crops
PORTRAIT_TOKENS = 16  # ip-adapter-faceid-portrait*: 16 tokens per reference vector (4 for the others)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(spec: str) -> bool:
    """Clearly a filesystem path (so never a Hugging Face id)."""
    return spec.startswith((".", "~", "/", "\\")) or "\\" in spec or Path(spec).drive != ""


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HFValidationError

    return (OSError, HFValidationError)


# ---------------------------------------------------------------------------------- devices
def resolve_device(device: str = "auto") -> str:
    """'auto' → cuda, then mps, then cpu; an explicit device that torch cannot use is an error."""
    import torch

    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GenerationError("--device cuda: torch sees no CUDA GPU (is this a CPU build of torch?)")
    if device == "mps" and not has_mps:
        raise GenerationError("--device mps: torch has no Apple Metal (MPS) backend here")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "float16"
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:  # build_pipeline checks DTYPES first; this guards direct callers
        raise ConfigError(f"--dtype {dtype!r} is not one of auto, {', '.join(table)}")
    return table[dtype]


def _unet_weights(folder: Path) -> Path | None:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                 "diffusion_pytorch_model.bin"):
        if (folder / "unet" / name).is_file():
            return folder / "unet" / name
    return None


def quiet_generation_libraries() -> None:
    """For the CLI, which owns the terminal: no loading bars or import-time notices from
    diffusers/transformers (castkeep shows one progress bar per run and its own warnings)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    # "Couldn't connect to the Hub ... Will try to load from local cache." precedes castkeep's own error line
    # when offline; _load_faceid still collects load_ip_adapter's warnings (it sets the level it needs).
    diffusers_logging.set_verbosity_error()


# ---------------------------------------------------------------------------------- base model
def _download_hint(repo: str, what: str, flag: str) -> str:
    return (f"download it with `huggingface-cli download {repo} --local-dir DIR` (or from "
            f"https://huggingface.co/{repo}) and pass {flag} DIR" if what == "folder" else
            f"download {what} from https://huggingface.co/{repo} and pass {flag} PATH/{what}")


def resolve_base_model(spec: str) -> Path:
    """A diffusers pipeline folder for `spec`: the folder itself, or the Hugging Face cache copy."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            hint = (" (a single-file checkpoint folder? castkeep needs a diffusers folder: see "
                    "`diffusers` convert scripts)" if any(path.glob("*.safetensors")) else "")
            raise ModelNotFoundError(f"not a diffusers pipeline folder: no model_index.json{hint}", path=path)
        return path
    if path.is_file():
        raise ModelNotFoundError("--base-model must be a diffusers pipeline folder (with model_index.json), a "
                                 "single-file .safetensors checkpoint, or a Hugging Face model id", path=path)
    if _looks_like_path(spec) or not _REPO_ID.match(spec):
        raise ModelNotFoundError("base model folder not found (pass a diffusers folder or a Hugging Face "
                                 f"id such as {DEFAULT_BASE_MODEL})", path=path)
    from diffusers import DiffusionPipeline

    try:
        return Path(DiffusionPipeline.download(spec, local_files_only=_offline()))
    except _hub_errors():
        reason = "HF_HUB_OFFLINE is set" if _offline() else "the download failed"
        raise ModelNotFoundError(f"base model '{spec}' is not a local folder nor in the Hugging Face cache "
                                 f"({reason}): "+ _download_hint(spec, "folder", "--base-model")) from None


def load_base_pipeline(folder: Path, *, dtype: Any, inpaint: bool = False, single_file: Path | None = None,
                       vae: str | None = None) -> Any:
    """from_pretrained(folder), local files only; SD1.5 and SDXL pipelines are supported, and with `inpaint`
    their inpainting checkpoints too. With `single_file`, that checkpoint's weights with `folder`'s configs
    (generation/single_file.py); `vae` replaces the VAE (a folder, a .safetensors file or a Hub id)."""
    from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

    try:
        config = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"unreadable model_index.json ({exc})", path=folder) from None
    class_name = config.get("_class_name", "?")
    if class_name in INPAINT_KINDS and not inpaint:
        raise GenerationError(f"{class_name} is an inpainting checkpoint: use it with fix-face, edit or outpaint; "
                              "generate needs the text-to-image model")
    if class_name not in PIPELINE_KINDS and class_name not in INPAINT_KINDS:
        raise GenerationError(f"{class_name} is not supported: castkeep generates with Stable Diffusion 1.5 "
                              f"or SDXL pipelines ({', '.join(PIPELINE_KINDS)})")
    components: dict[str, Any] = {}
    if vae is not None:
        components["vae"] = load_vae(vae, folder, dtype=dtype, offline=_offline())
    if single_file is not None:
        import diffusers

        if PIPELINE_KINDS.get(class_name) == "sd15":  # A1111 checkpoints carry no safety checker
            components.update(safety_checker=None, requires_safety_checker=False)
        return load_single_file_pipeline(single_file, folder, getattr(diffusers, class_name), dtype=dtype,
                                         **components)
    try:
        auto = AutoPipelineForInpainting if class_name in INPAINT_KINDS else AutoPipelineForText2Image
        return auto.from_pretrained(folder, dtype=dtype, local_files_only=True, **components)
    except _hub_errors() as exc:
        raise ModelNotFoundError(f"cannot load the pipeline folder ({' '.join(str(exc).split())[:300]})",
                                 path=folder) from None


# ---------------------------------------------------------------------------------- FaceID weights
@dataclass
class FaceIDCheckpoint:
    path: Path
    variant: str  # one of FACEID_VARIANTS
    cross_attention_dim: int
    id_dim: int
    has_lora: bool
    num_tokens: int = 4  # tokens the projection makes from one identity vector
    clip_dim: int | None = None  # Plus: the width of the CLIP hidden states its resampler takes

    @property
    def needs_image_encoder(self) -> bool:
        return self.variant in PLUS_VARIANTS

    @property
    def shortcut(self) -> bool:
        """Plus v2 adds the ID tokens to the resampler's output (h94's card: `shortcut=True` for v2)."""
        return self.variant == "faceid-plusv2"


def resolve_ip_adapter(spec: str, kind: str) -> Path:
    """A local FaceID weights file: a path, a folder holding one, or a Hub `repo[/file]` (cached)."""
    path = Path(spec).expanduser()
    default_name = FACEID_FILES.get(kind, FACEID_FILES["sd15"])
    if path.is_file():
        return path
    if path.is_dir():
        candidates = [path / default_name, path / default_name.replace(".bin", ".safetensors")]
        found = [c for c in candidates if c.is_file()] or sorted(
            p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and "faceid" in p.name.lower())
        if len(found) == 1 or (found and found[0] in candidates):
            return found[0]
        raise ModelNotFoundError(f"no single FaceID weights file in this folder (expected {default_name}); "
                                 "pass --ip-adapter PATH/FILE", path=path)
    parts = spec.split("/")
    if _looks_like_path(spec) or len(parts) < 2 or not _REPO_ID.match("/".join(parts[:2])):
        raise ModelNotFoundError("IP-Adapter FaceID weights not found (pass a .safetensors/.bin file or a "
                                 f"Hugging Face repo such as {DEFAULT_IP_ADAPTER})", path=path)
    repo = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or default_name
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=_offline()))
    except _hub_errors():
        reason = "HF_HUB_OFFLINE is set" if _offline() else "the download failed"
        hint = _download_hint(repo, filename, "--ip-adapter")
        raise ModelNotFoundError(f"IP-Adapter weights '{spec}' are not a local file, and {repo}/{filename} is not "
                                 f"in the Hugging Face cache ({reason}): {hint}") from None


def _checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key → shape of a FaceID checkpoint, flattened to `image_proj.*` / `ip_adapter.*` names."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ModelNotFoundError(f"not a readable safetensors file ({exc})", path=path) from None
    import torch

    try:
        # weights_only: a .bin from the internet must never run code while unpickling.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelNotFoundError(f"not a readable PyTorch weights file, or one that needs unsafe "
                                 f"unpickling ({' '.join(str(exc).split())[:200]})", path=path) from None
    if not isinstance(state, dict):
        raise GenerationError("not an IP-Adapter checkpoint (no image_proj/ip_adapter keys)", path=path)
    shapes: dict[str, tuple[int, ...]] = {}
    for group, tensors in state.items():
        if isinstance(tensors, dict):
            for key, value in tensors.items():
                shapes[f"{group}.{key}"] = tuple(getattr(value, "shape", ()))
    return shapes


def _tokens(shapes: dict[str, tuple[int, ...]], width: int) -> int:
    """Tokens the ID projection makes per vector: its output rows over the token width (4 when unreadable:
    diffusers' own assumption; a truncated checkpoint then fails in diffusers' loader, with its message)."""
    rows = shapes.get("image_proj.proj.2.weight", (0,))[0]
    return rows // width if rows and width else 4


def inspect_faceid(path: Path, plus_version: str = "auto") -> FaceIDCheckpoint:
    """Check a checkpoint is IP-Adapter FaceID (what castkeep conditions on) and tell its variant, before
    loading it. Plus v1 and v2 have the same keys and shapes (v2 was trained with the shortcut): the file
    name decides (`plusv2`, h94's naming) unless `plus_version` ("v1" | "v2") says. Portrait: `portrait` in
    the file name, or a LoRA-less projection making 16 tokens per vector (h94's Portrait checkpoints)."""
    if plus_version not in PLUS_VERSIONS:
        raise ConfigError(f"--plus-version {plus_version!r} is not one of {', '.join(PLUS_VERSIONS)}")
    shapes = _checkpoint_shapes(path)
    if not any(k.startswith("image_proj.") for k in shapes) or not any(k.startswith("ip_adapter.") for k in shapes):
        raise GenerationError("not an IP-Adapter checkpoint (no image_proj/ip_adapter keys)", path=path)
    has_lora = any("_lora." in k for k in shapes)
    name = path.name.lower()
    if "image_proj.perceiver_resampler.proj_in.weight" in shapes:
        width, clip_dim = shapes["image_proj.perceiver_resampler.proj_in.weight"]
        v2 = plus_version == "v2" or (plus_version == "auto" and "plusv2" in name)
        return FaceIDCheckpoint(path, "faceid-plusv2" if v2 else "faceid-plus",
                                shapes["image_proj.perceiver_resampler.proj_out.weight"][0],
                                shapes["image_proj.proj.0.weight"][1], has_lora,
                                num_tokens=_tokens(shapes, width), clip_dim=clip_dim)
    if plus_version != "auto":
        raise ConfigError(f"--plus-version applies to FaceID Plus checkpoints; {path.name} is not one")
    if "image_proj.norm.weight" in shapes and "image_proj.proj.0.weight" in shapes:
        cross = shapes["image_proj.norm.weight"][0]
        tokens = _tokens(shapes, cross)
        portrait = "portrait" in name or (tokens == PORTRAIT_TOKENS and not has_lora)
        return FaceIDCheckpoint(path, "faceid-portrait" if portrait else "faceid", cross,
                                shapes["image_proj.proj.0.weight"][1], has_lora, num_tokens=tokens)
    raise GenerationError("this is a CLIP-image IP-Adapter, not IP-Adapter FaceID: castkeep conditions on "
                          "ArcFace identity, use e.g. ip-adapter-faceid_sd15.bin / ip-adapter-faceid_sdxl.bin",
                          path=path)


# ---------------------------------------------------------------------------------- CLIP image encoder
def _encoder_weights(folder: Path) -> Path | None:
    return next((folder / name for name in _ENCODER_WEIGHTS if (folder / name).is_file()), None)


def resolve_image_encoder(spec: str) -> Path:
    """A local transformers CLIP vision folder (config.json + weights) for FaceID Plus: the folder given (or
    its `image_encoder/`, the layout of h94/IP-Adapter's `models/`), or the Hugging Face cache copy of a Hub id
    (only config.json and one weights file are fetched, never the repository's open_clip files)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        for folder in (path, path / "image_encoder"):
            if (folder / "config.json").is_file() and _encoder_weights(folder) is not None:
                return folder
        raise ModelNotFoundError("--image-encoder: not a CLIP image encoder folder (needs config.json and "
                                 f"{' or '.join(_ENCODER_WEIGHTS)})", path=path)
    if path.exists() or _looks_like_path(spec) or not _REPO_ID.match(spec):
        raise ModelNotFoundError("CLIP image encoder folder not found (pass --image-encoder a folder with config.json "
                                 f"and the weights, or a Hugging Face id such as {DEFAULT_IMAGE_ENCODER})", path=path)
    from huggingface_hub import hf_hub_download

    try:
        folder = Path(hf_hub_download(spec, "config.json", local_files_only=_offline())).parent
        for name in _ENCODER_WEIGHTS:
            try:
                hf_hub_download(spec, name, local_files_only=_offline())
                return folder
            except _hub_errors():
                continue
    except _hub_errors():
        pass
    reason = "HF_HUB_OFFLINE is set" if _offline() else "the download failed"
    raise ModelNotFoundError(
        f"CLIP image encoder '{spec}' (FaceID Plus needs it) is not a local folder nor in the Hugging Face cache "
        f"({reason}): download it with `huggingface-cli download {spec} config.json {_ENCODER_WEIGHTS[0]} "
        f"--local-dir DIR` and pass --image-encoder DIR") from None


def load_image_encoder(pipe: Any, folder: Path, checkpoint: FaceIDCheckpoint, dtype: Any) -> tuple[Any, str]:
    """transformers' CLIPVisionModelWithProjection from `folder`, registered as the pipeline's `image_encoder`
    (so it is placed and offloaded with the rest), and the CLIPImageProcessor for its input size, which
    diffusers' `load_ip_adapter` would build too. Returns (processor, sha256 of the weights file)."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load the CLIP image encoder ({' '.join(str(exc).split())[:300]})",
                                 path=folder) from None
    if int(encoder.config.hidden_size) != checkpoint.clip_dim:
        raise GenerationError(f"this FaceID Plus checkpoint takes {checkpoint.clip_dim}-d CLIP features but the image "
                              f"encoder makes {encoder.config.hidden_size}-d ones: use {DEFAULT_IMAGE_ENCODER}",
                              path=folder)
    pipe.register_modules(image_encoder=encoder)
    size: Any = encoder.config.image_size  # an int for CLIP (transformers types it as int or a pair)
    weights = _encoder_weights(folder)
    assert weights is not None  # resolve_image_encoder found it
    return CLIPImageProcessor(size=size, crop_size=size), cached_sha256(weights)


# ---------------------------------------------------------------------------------- assembly
@dataclass
class LoadedPipeline:
    pipe: Any
    kind: str  # "sd15" | "sdxl"
    device: str
    dtype: str
    base_model: str
    base_model_folder: Path
    base_model_hash: str | None
    ip_adapter: str
    checkpoint: FaceIDCheckpoint
    ip_adapter_hash: str
    warnings: list[str] = field(default_factory=list)
    requested_device: str = "auto"  # what the caller asked for; `device` is what it resolved to
    vae: str | None = None  # a VAE given in place of the base model's own
    offload: str = "none"  # "model" | "sequential": accelerate hooks move each part to `device` as it runs
    image_encoder: str | None = None  # FaceID Plus: the CLIP image encoder as given (id or folder)
    image_encoder_hash: str | None = None
    image_processor: Any = None  # its CLIPImageProcessor (the face crop → pixel_values)

    @property
    def native_size(self) -> int:
        """The side length the base model was trained at (512 for SD1.5, 1024 for SDXL)."""
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)

    def models_dict(self) -> dict[str, Any]:
        return {"base_model": self.base_model, "base_model_kind": self.kind,
                "base_model_hash": self.base_model_hash,
                "ip_adapter": self.ip_adapter, "ip_adapter_file": self.checkpoint.path.name,
                "ip_adapter_hash": self.ip_adapter_hash, "ip_adapter_variant": self.checkpoint.variant,
                "faceid_lora": self.checkpoint.has_lora, "vae": self.vae,
                "image_encoder": self.image_encoder, "image_encoder_hash": self.image_encoder_hash}


def check_load_options(device: str, dtype: str) -> None:
    """Reject a device or dtype name before anything slow happens."""
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r} is not one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")


def resolve_base(base_model: str, base_config: str | None = None) -> tuple[Path, str]:
    """The base model's local folder (for a single-file checkpoint: its config folder) and its architecture
    ("sd15" | "sdxl")."""
    if is_single_file(base_model):
        folder = single_file_config(Path(base_model).expanduser(), base_config)
    else:
        folder = resolve_base_model(base_model)
    try:
        with open(folder / "model_index.json", encoding="utf-8") as handle:
            class_name = json.load(handle).get("_class_name")
        kind = PIPELINE_KINDS.get(class_name) or INPAINT_KINDS.get(class_name, "sd15")
    except (OSError, ValueError, AttributeError):
        raise ModelNotFoundError("not a diffusers model folder (unreadable model_index.json)", path=folder) from None
    return folder, kind


def resolve_weights(base_model: str, ip_adapter: str, base_config: str | None = None) -> Path:
    """The FaceID weights file `build_pipeline` would load, found without loading anything (so a run can
    check the character's embedding space for it first). Only a folder or a Hub id needs the base
    model's architecture to pick the file."""
    if Path(ip_adapter).expanduser().is_file():
        return Path(ip_adapter).expanduser()
    return resolve_ip_adapter(ip_adapter, resolve_base(base_model, base_config)[1])


def build_pipeline(base_model: str = DEFAULT_BASE_MODEL, ip_adapter: str = DEFAULT_IP_ADAPTER, *,
                   device: str = "auto", dtype: str = "auto", hash_base_model: bool = True,
                   inpaint: bool = False, offload: str = "none", base_config: str | None = None,
                   vae: str | None = None, image_encoder: str | None = None,
                   plus_version: str = "auto") -> LoadedPipeline:
    """Base model + FaceID weights, on `device`, ready for `ip_adapter_image_embeds`. `inpaint` also
    accepts an inpainting checkpoint as the base model (the edit commands). `offload` ("model",
    "sequential") keeps the weights in CPU RAM and moves each part to the GPU as it runs (generation/memory.py).
    A single-file `base_model` (.safetensors) loads with `base_config`'s configs; `vae` replaces the VAE.
    FaceID Plus / Plus v2 checkpoints also load `image_encoder` (a folder or Hub id; default
    DEFAULT_IMAGE_ENCODER); `plus_version` tells v1 from v2 where the file name does not.

    The IP-Adapter scale is not set here: it is a per-run setting (`GenerationConfig.id_scale`),
    applied by `generate_images` on every call."""
    check_load_options(device, dtype)
    check_offload(offload)
    requested_device = device
    folder, kind = resolve_base(base_model, base_config)
    single_file = Path(base_model).expanduser() if is_single_file(base_model) else None
    weights = resolve_ip_adapter(ip_adapter, kind)
    checkpoint = inspect_faceid(weights, plus_version)  # fail fast, before the (slow) base model load
    encoder_folder = None
    if checkpoint.needs_image_encoder:
        encoder_folder = resolve_image_encoder(image_encoder or DEFAULT_IMAGE_ENCODER)
    elif image_encoder is not None:
        raise ConfigError(f"--image-encoder is for FaceID Plus checkpoints; {weights.name} is "
                          f"{checkpoint.variant} and takes no CLIP image")
    if checkpoint.has_lora:
        from diffusers.utils import USE_PEFT_BACKEND

        if not USE_PEFT_BACKEND:  # diffusers would only log a warning and skip the LoRA
            raise GenerationError("this FaceID checkpoint carries LoRA weights that diffusers loads only "
                                  "with `peft`: pip install peft", path=weights)
    device = resolve_device(device)
    check_offload(offload, device)
    torch_dtype = resolve_dtype(dtype, device)
    pipe = load_base_pipeline(folder, dtype=torch_dtype, inpaint=inpaint, single_file=single_file, vae=vae)
    unet_dim = int(pipe.unet.config.cross_attention_dim)
    if checkpoint.cross_attention_dim != unet_dim:
        def architecture(dim: int) -> str:
            return {768: "SD1.5", 2048: "SDXL"}.get(dim, f"{dim}-d")

        raise GenerationError(
            f"FaceID checkpoint is for a {architecture(checkpoint.cross_attention_dim)} "
            f"UNet but the base model is {architecture(unet_dim)}: use "
            f"{FACEID_FILES[kind]} with this base model", path=weights)
    warnings = _load_faceid(pipe, weights)
    processor, encoder_hash = None, None
    if encoder_folder is not None:
        processor, encoder_hash = load_image_encoder(pipe, encoder_folder, checkpoint, torch_dtype)
        guard_plus_projection(pipe)
    # diffusers' SDXL pipelines embed their own dwtDct watermark whenever invisible-watermark is installed;
    # castkeep marks every output itself (one mark it can read back, off with --no-watermark).
    if getattr(pipe, "watermark", None) is not None:
        pipe.watermark = None
    place_pipeline(pipe, device, offload)
    pipe.set_progress_bar_config(disable=True)
    # A1111's "Model hash" is the checkpoint file's; a diffusers folder has only its UNet file to offer.
    unet_file = single_file or _unet_weights(folder)
    return LoadedPipeline(
        pipe=pipe, kind=kind, device=device, dtype=str(torch_dtype).replace("torch.", ""),
        base_model=base_model, base_model_folder=folder,
        base_model_hash=cached_sha256(unet_file) if hash_base_model and unet_file else None,
        ip_adapter=ip_adapter, checkpoint=checkpoint, ip_adapter_hash=cached_sha256(weights), warnings=warnings,
        requested_device=requested_device, offload=offload, vae=vae,
        image_encoder=None if encoder_folder is None else (image_encoder or DEFAULT_IMAGE_ENCODER),
        image_encoder_hash=encoder_hash, image_processor=processor)


# diffusers warnings that say nothing about this use: FaceID takes embeddings, never images, and the
# FaceID LoRA has no text-encoder part.
_EXPECTED_WARNINGS = ("image_encoder is not loaded", "No LoRA keys associated to CLIPTextModel",
                      "should be kept in float32")


def _load_faceid(pipe: Any, weights: Path) -> list[str]:
    """diffusers' load_ip_adapter on a local file; its warnings are returned (for the sidecar and the
    CLI's stderr), not printed in the middle of a progress bar."""
    import logging

    root = logging.getLogger("diffusers")
    captured: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = " ".join(record.getMessage().split())
            if not any(expected in message for expected in _EXPECTED_WARNINGS):
                captured.append(message)

    saved = [(handler, handler.level) for handler in root.handlers]
    saved_level = root.level
    collector = _Collect(logging.WARNING)
    for handler, _ in saved:
        handler.setLevel(logging.ERROR)
    root.addHandler(collector)
    root.setLevel(logging.WARNING)
    try:
        pipe.load_ip_adapter(str(weights.parent), subfolder="", weight_name=weights.name,
                             image_encoder_folder=None, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise GenerationError(f"diffusers could not load these FaceID weights "
                              f"({' '.join(str(exc).split())[:300]})", path=weights) from None
    finally:
        root.removeHandler(collector)
        root.setLevel(saved_level)
        for handler, level in saved:
            handler.setLevel(level)
    return captured
