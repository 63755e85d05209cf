"""Single-file checkpoints (A1111/Civitai `.safetensors`) and a custom VAE.

A single file holds the weights in the original Stable Diffusion key layout but no configuration: diffusers'
`from_single_file` converts it using a diffusers config folder (model_index.json, each component's
config.json, the tokenizer and scheduler files; no weights needed). castkeep gives it one explicitly, so
nothing is fetched behind the user's back: `--base-config DIR` (a diffusers folder of the same
architecture), or else the configs of the architecture's reference repository from the Hugging Face cache
(downloaded once when online: JSON and tokenizer files only, a few hundred kB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import GenerationError, ModelNotFoundError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Reference repositories whose configs describe each architecture's single-file checkpoints.
CONFIG_REPOS = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}
# A key only that architecture's checkpoints have (the text encoder's position embedding).
_KIND_KEYS = {"sdxl": "conditioner.embedders.1.model.positional_embedding",
              "sd15": "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"}
_CONFIG_PATTERNS = ["*.json", "*.txt", "tokenizer*/*"]


def is_single_file(spec: str) -> bool:
    """A local checkpoint file rather than a diffusers folder or a Hub id."""
    path = Path(spec).expanduser()
    return path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES


def checkpoint_kind(path: Path) -> str:
    """sd15 or sdxl, from the checkpoint's keys (read from the safetensors header only)."""
    if path.suffix.lower() != ".safetensors":
        raise GenerationError("only .safetensors single-file checkpoints are loaded (a .ckpt is a pickle that "
                              "can run code): convert it, or pass --base-config for a diffusers folder", path=path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            keys = set(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelNotFoundError(f"not a readable safetensors checkpoint ({exc})", path=path) from None
    for kind, key in _KIND_KEYS.items():
        if key in keys:
            return kind
    raise GenerationError("not a Stable Diffusion 1.5 or SDXL single-file checkpoint (no CLIP text encoder in the "
                          "original layout)", path=path)


def single_file_config(path: Path, base_config: str | None) -> Path:
    """The diffusers config folder for a single-file checkpoint: `base_config`, or the reference repository's
    configs from the Hugging Face cache."""
    if base_config is not None:
        folder = Path(base_config).expanduser()
        if not (folder / "model_index.json").is_file():
            raise ModelNotFoundError("--base-config must be a diffusers folder (with model_index.json) of the "
                                     "checkpoint's architecture", path=folder)
        return folder
    repo = CONFIG_REPOS[checkpoint_kind(path)]
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo, allow_patterns=_CONFIG_PATTERNS,
                                      local_files_only=bool(constants.HF_HUB_OFFLINE)))
    except (OSError, HFValidationError):
        raise ModelNotFoundError(f"a single-file checkpoint needs the diffusers configs of {repo}, which are not in "
                                 f"the Hugging Face cache: pass --base-config DIR (a diffusers folder of the same "
                                 f"architecture), or run `huggingface-cli download {repo} --include '*.json' "
                                 "'*.txt' --local-dir DIR` once", path=path) from None


def load_single_file_pipeline(path: Path, config: Path, pipeline_class: Any, *, dtype: Any, **components: Any) -> Any:
    """`from_single_file` with the local config folder; no network."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        return pipeline_class.from_single_file(str(path), config=str(config), local_files_only=True,
                                               torch_dtype=dtype, **components)
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as exc:
        raise GenerationError(f"diffusers could not load this single-file checkpoint with the configs in {config} "
                              f"({' '.join(str(exc).split())[:300]})", path=path) from None


def load_vae(spec: str, config: Path, *, dtype: Any, offline: bool) -> Any:
    """`--vae`: a diffusers VAE folder (or a pipeline folder's vae/), a single .safetensors file (converted
    with the base model's vae/config.json), or a Hub id."""
    from diffusers import AutoencoderKL

    path = Path(spec).expanduser()
    try:
        if path.is_file():
            if path.suffix.lower() != ".safetensors":
                raise GenerationError("--vae: only .safetensors VAE files are loaded", path=path)
            return AutoencoderKL.from_single_file(str(path), config=str(config), subfolder="vae",
                                                  local_files_only=True, torch_dtype=dtype)
        if path.is_dir():
            subfolder = "vae" if (path / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(path, subfolder=subfolder, local_files_only=True, torch_dtype=dtype)
        return AutoencoderKL.from_pretrained(spec, local_files_only=offline, torch_dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelNotFoundError(f"--vae: cannot load this VAE ({' '.join(str(exc).split())[:300]})",
                                 path=path) from None
