"""Tiny randomly initialised diffusers components, for the generation tests.

`save_tiny_pipeline` writes an SD1.5-shaped diffusers folder (UNet, VAE, CLIP text encoder,
tokenizer, scheduler) a few hundred kB in size (`regional=True`: one built to measure where a region's
identity lands in the pixels; SDXL-shaped with `sdxl=True`), and `save_tiny_faceid` an IP-Adapter FaceID
checkpoint with the real key layout (`image_proj.proj.0/proj.2/norm.*`,
`ip_adapter.{i}.to_k_ip/to_v_ip.weight`, optionally the FaceID LoRA keys the real checkpoints
carry). Both are loaded exactly like real weights: `from_pretrained(folder)` and
`load_ip_adapter(...)`. Nothing here downloads anything. (pyproject's pytest `pythonpath` makes
this importable as `tiny_pipelines`.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ARCFACE_DIM = 512  # the real FaceID input: one L2-normalised ArcFace vector
CROSS_ATTENTION_DIM = 32
FACEID_TOKENS = 4  # what diffusers assumes for every FaceID checkpoint
FACEID_MULT = 2  # proj.0 is (512 * 2, 512) in the real sd15 checkpoint
LORA_RANK = 4  # the real sd15 checkpoint uses 128
STEPS = 2  # denoising steps the tests run: enough for every code path, fast on a CPU


def _tiny_tokenizer():
    """A byte-level CLIP tokenizer without merges: every prompt tokenises, one token per character.

    Written as vocab.json + merges.txt and read back through `CLIPTokenizer(vocab_file, merges_file)`,
    the constructor transformers 4.x (slow tokenizer) and 5.x (tokenizers-backed) both take.
    """
    import json
    import tempfile

    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    # Byte-level alphabet with and without CLIP's end-of-word marker.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    with tempfile.TemporaryDirectory(prefix="castkeep-tiny-tokenizer-") as folder:
        vocab_file, merges_file = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)


def _sd15_pipeline(unet, vae, tokenizer):
    """The tiny text encoder and DDIM scheduler around `unet` and `vae` (made after them: the same random
    weights for a seed as when each builder made its own)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=CROSS_ATTENTION_DIM,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32,
        vocab_size=len(tokenizer), max_position_embeddings=77))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)


def build_tiny_pipeline(seed: int = 0):
    """An SD1.5-shaped `StableDiffusionPipeline` with tiny random weights (64x64 images)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8, norm_num_groups=16)
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=64)
    return _sd15_pipeline(unet, vae, tokenizer)


REGIONAL_SIZE = 128  # the regional pipeline's native size: a 64x64 latent, as SD1.5 has at 512 px


def build_tiny_regional_pipeline(seed: int = 0):
    """An SD1.5-shaped pipeline for measuring where an identity's change lands in the image (regions).

    A random network spreads a change made in one half of the image over the other half in ways a trained
    one does not; measured on `build_tiny_pipeline` (a change on the left moves the right half about half as
    much), the spread comes from:
    - GroupNorm statistics, shared by the whole map: the identity's contribution is close to one offset per
      channel over its region, and averaging over only 2-4 channels per group passes much of that offset to
      every pixel. Here one group spans all the channels (SD1.5 averages 10-40 channels per group).
    - self-attention: random query/key weights attend almost uniformly, so every position receives the mean
      of the whole map (a trained model's self-attention is content-selective). Its output projection is
      zeroed here, in the UNet; the VAE has no mid-block attention.
    - the VAE decoder's GroupNorm (2 channels per group in the default tiny VAE): one group here too.
    - one downsampling level put the cross-attention on a 16x16 map. Here the UNet has a single level, so
      the identities condition the 64x64 latent directly (SD1.5's first cross-attention level is 64x64).
    The left/right pixel-change ratio is then about 7 (seed 0; other random builds give 2-6, the VAE
    decoder's GroupNorm varying most). diffusers' masking itself is exact wherever the attention map is at most
    a quarter of the image's size (SD: an eighth and less; tests/generation/test_regions.py): an identity adds
    nothing to an attention cell that does not overlap its mask. At half size, as here, the bicubic
    downsampling of the mask (no antialiasing) rings one cell past its edge (weight -0.09).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32,), layers_per_block=1, sample_size=REGIONAL_SIZE // 2, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
        cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8, norm_num_groups=1)
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn1"):
                module.to_out[0].weight.zero_()
                module.to_out[0].bias.zero_()
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=1, sample_size=REGIONAL_SIZE,
        mid_block_add_attention=False)
    return _sd15_pipeline(unet, vae, tokenizer)


def build_tiny_sdxl_pipeline(seed: int = 0):
    """An SDXL-shaped `StableDiffusionXLPipeline` (two text encoders, text_time conditioning)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer()
    text_config = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                       num_attention_heads=4, num_hidden_layers=2, projection_dim=32,
                       vocab_size=len(tokenizer), max_position_embeddings=77, hidden_act="gelu")
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=16)
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=64)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_config)), tokenizer_2=_tiny_tokenizer(),
        unet=unet, scheduler=scheduler, image_encoder=None, feature_extractor=None)


def save_tiny_pipeline(folder: str | Path, seed: int = 0, *, sdxl: bool = False, regional: bool = False) -> Path:
    """Write the tiny pipeline (SD1.5-shaped, SDXL-shaped, or the regional SD1.5 one) as a diffusers folder
    (safetensors)."""
    folder = Path(folder)
    build = build_tiny_sdxl_pipeline if sdxl else build_tiny_regional_pipeline if regional else build_tiny_pipeline
    build(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_inpaint_pipeline(seed: int = 0, *, sdxl: bool = False):
    """The tiny SD1.5 (or SDXL) pipeline as an inpainting checkpoint: the same components with a 9-channel
    UNet (latents + mask + masked-image latents), as in SD1.5/SDXL inpainting and diffusers' own tests."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline, UNet2DConditionModel

    base = build_tiny_sdxl_pipeline(seed) if sdxl else build_tiny_pipeline(seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**base.unet.config, "in_channels": 9})
    components = {**base.components, "unet": unet}
    if sdxl:
        return StableDiffusionXLInpaintPipeline(**components, requires_aesthetics_score=False)
    return StableDiffusionInpaintPipeline(**components, requires_safety_checker=False)


def save_tiny_inpaint_pipeline(folder: str | Path, seed: int = 0, *, sdxl: bool = False) -> Path:
    """Write the tiny inpainting checkpoint as a diffusers folder (model_index: *InpaintPipeline)."""
    folder = Path(folder)
    build_tiny_inpaint_pipeline(seed, sdxl=sdxl).save_pretrained(folder, safe_serialization=True)
    return folder


def faceid_state_dict(unet, *, seed: int = 0, lora: bool = True, scale: float = 0.5) -> dict:
    """A random FaceID state dict for `unet` with the real checkpoints' key names and shapes.

    Keys index `unet.attn_processors` in order, as the original IP-Adapter training code does:
    the cross-attention (attn2) processors carry `to_k_ip`/`to_v_ip`, and with `lora` every
    processor carries the FaceID LoRA (`to_{q,k,v,out}_lora.{down,up}`).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    cross = unet.config.cross_attention_dim
    inner = ARCFACE_DIM * FACEID_MULT
    state = {
        "image_proj.proj.0.weight": randn(inner, ARCFACE_DIM),
        "image_proj.proj.0.bias": randn(inner),
        "image_proj.proj.2.weight": randn(cross * FACEID_TOKENS, inner),
        "image_proj.proj.2.bias": randn(cross * FACEID_TOKENS),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    channels = list(unet.config.block_out_channels)
    for key_id, name in enumerate(unet.attn_processors):
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        is_cross = name.endswith("attn2.processor")
        context = cross if is_cross else hidden
        if is_cross:
            state[f"ip_adapter.{key_id}.to_k_ip.weight"] = randn(hidden, cross)
            state[f"ip_adapter.{key_id}.to_v_ip.weight"] = randn(hidden, cross)
        if lora:
            for part, width in (("to_q", hidden), ("to_k", context), ("to_v", context), ("to_out", hidden)):
                state[f"ip_adapter.{key_id}.{part}_lora.down.weight"] = randn(LORA_RANK, width)
                state[f"ip_adapter.{key_id}.{part}_lora.up.weight"] = randn(hidden, LORA_RANK)
    return {key: value.contiguous() for key, value in state.items()}


def save_tiny_faceid(path: str | Path, pipeline_folder: str | Path, *, seed: int = 0,
                     lora: bool = True) -> Path:
    """Write a FaceID checkpoint matching the UNet in `pipeline_folder`: safetensors (flat keys), or for a
    `.bin` name the nested `{"image_proj": ..., "ip_adapter": ...}` torch file h94 publishes."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_folder) / "unet")
    return _save_state(faceid_state_dict(unet, seed=seed, lora=lora), Path(path))


# ---------------------------------------------------------------------------------- stand-ins
def unit(seed: int) -> np.ndarray:
    """A random unit 512-d vector: an ArcFace-shaped identity."""
    vector = np.random.default_rng(seed).standard_normal(ARCFACE_DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


class PixelScorer:
    """Stands in for a face scorer on tiny-model noise (which has no face): the output's mean
    brightness, so ranking and retry decisions depend on the real generated pixels."""

    def score(self, image: Image.Image):
        from castkeep.generation.scoring import OutputScore

        value = float(np.asarray(image, dtype=np.float32).mean() / 255.0)
        clipped = min(max(value, 1e-6), 1 - 1e-6)
        log_odds = float(np.log(clipped / (1 - clipped)))
        verdict = {"scorer": "fused", "domain": "generated", "score": log_odds, "metric": "log-odds",
                   "threshold": 0.0, "same": value > 0.5, "probability": value}
        return OutputScore(face_found=True, faces=1, cosine=value, probability=value, same=value > 0.5,
                           threshold=0.0, scorer="fused", metric="log-odds", score=log_odds, log_odds=log_odds,
                           scores={"fused": verdict})


# ---------------------------------------------------------------------------------- single-file checkpoints
def _ldm_unet_names(unet) -> dict[str, str]:
    """diffusers UNet key prefix → the original (LDM/A1111) one, for any block count and layers_per_block."""
    layers = unet.config.layers_per_block
    blocks = len(unet.config.block_out_channels)
    names = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
             "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
             "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
             "mid_block.resnets.1.": "middle_block.2."}
    for i in range(blocks):
        for j in range(layers):
            names[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{i * (layers + 1) + j + 1}.0."
            names[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{i * (layers + 1) + j + 1}.1."
        if i < blocks - 1:
            names[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op."
        has_attention = hasattr(unet.up_blocks[i], "attentions")
        for j in range(layers + 1):
            names[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{i * (layers + 1) + j}.0."
            names[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{i * (layers + 1) + j}.1."
        if i < blocks - 1:
            names[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attention else 1}."
    return names


_LDM_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "norm2.": "out_layers.0.",
               "conv2.": "out_layers.3.", "time_emb_proj.": "emb_layers.1.", "conv_shortcut.": "skip_connection."}


def ldm_unet_state(unet) -> dict:
    names = sorted(_ldm_unet_names(unet).items(), key=lambda item: -len(item[0]))
    state = {}
    for key, value in unet.state_dict().items():
        prefix = next(p for p in names if key.startswith(p[0]))
        rest = key[len(prefix[0]):]
        if ".resnets." in prefix[0]:
            rest = next((new + rest[len(old):] for old, new in _LDM_RESNET.items() if rest.startswith(old)), rest)
        state["model.diffusion_model." + prefix[1] + rest] = value
    return state


def ldm_vae_state(vae) -> dict:
    blocks = len(vae.config.block_out_channels)
    state = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = new.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        if "mid_block.attentions.0" in new:
            new = new.replace("mid_block.attentions.0", "mid.attn_1")
            for old, ldm in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                             ("to_out.0", "proj_out")):
                new = new.replace(f".{old}.", f".{ldm}.")
            if value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)
        for i in range(blocks):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{blocks - 1 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{blocks - 1 - i}.upsample.")
        state["first_stage_model." + new] = value
    return state


def ldm_clip_state(text_encoder) -> dict:
    """`cond_stage_model.transformer.text_model.*`, as in SD1.5 checkpoints (transformers 5 drops the
    `text_model.` level from CLIPTextModel's own state dict; 4.x keeps it)."""
    return {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in text_encoder.state_dict().items()}


def save_tiny_single_file(path: str | Path, seed: int = 0) -> Path:
    """The tiny SD1.5 pipeline as one A1111/Civitai-style `.safetensors` checkpoint: original (LDM) key names
    (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`), for
    `from_single_file` with a local diffusers config folder (`save_tiny_pipeline(seed=seed)`'s)."""
    from safetensors.torch import save_file

    pipe = build_tiny_pipeline(seed)
    state = {**ldm_unet_state(pipe.unet), **ldm_vae_state(pipe.vae),
             **ldm_clip_state(pipe.text_encoder)}
    path = Path(path)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# ---------------------------------------------------------------------------------- FaceID Plus / Portrait
CLIP_HIDDEN = 48  # the tiny CLIP vision encoder's width (ViT-H/14's is 1280)
CLIP_IMAGE_SIZE = 32  # its input size (ViT-H/14: 224): 4x4 patches of 8 px + the class token = 17 tokens
PLUS_DEPTH = 4  # the resampler blocks of h94's FaceID Plus (diffusers' converter expects exactly 4)
PLUS_HEAD_DIM = 64  # diffusers reads heads = to_q rows // 64


def faceid_plus_state_dict(unet, *, seed: int = 0, lora: bool = True, scale: float = 0.5) -> dict:
    """A random FaceID Plus / Plus v2 state dict for `unet` with h94's key names and shapes (Plus v1 and v2
    are the same layout): the ID MLP (`image_proj.proj.0/2`, `norm`) and the FacePerceiverResampler that reads
    CLIP hidden states (`image_proj.perceiver_resampler.proj_in/proj_out/norm_out`, 4 blocks of attention
    `norm1/norm2/to_q/to_kv/to_out` and feed-forward `1.0/1.1/1.3`), then the FaceID attention and LoRA keys."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1000)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    cross = unet.config.cross_attention_dim
    inner = PLUS_HEAD_DIM  # one head
    state = {key: value for key, value in faceid_state_dict(unet, seed=seed, lora=lora, scale=scale).items()
             if key.startswith("ip_adapter.")}
    prefix = "image_proj.perceiver_resampler."
    state.update({
        "image_proj.proj.0.weight": randn(ARCFACE_DIM * 2, ARCFACE_DIM), "image_proj.proj.0.bias": randn(ARCFACE_DIM * 2),
        "image_proj.proj.2.weight": randn(cross * FACEID_TOKENS, ARCFACE_DIM * 2),
        "image_proj.proj.2.bias": randn(cross * FACEID_TOKENS),
        "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross),
        prefix + "proj_in.weight": randn(cross, CLIP_HIDDEN), prefix + "proj_in.bias": randn(cross),
        prefix + "proj_out.weight": randn(cross, cross), prefix + "proj_out.bias": randn(cross),
        prefix + "norm_out.weight": torch.ones(cross), prefix + "norm_out.bias": torch.zeros(cross),
    })
    for i in range(PLUS_DEPTH):
        block = f"{prefix}layers.{i}."
        for norm in ("0.norm1", "0.norm2", "1.0"):
            state[f"{block}{norm}.weight"], state[f"{block}{norm}.bias"] = torch.ones(cross), torch.zeros(cross)
        state.update({f"{block}0.to_q.weight": randn(inner, cross), f"{block}0.to_kv.weight": randn(2 * inner, cross),
                      f"{block}0.to_out.weight": randn(cross, inner), f"{block}1.1.weight": randn(4 * cross, cross),
                      f"{block}1.3.weight": randn(cross, 4 * cross)})
    return {key: value.contiguous() for key, value in state.items()}


def portrait_state_dict(unet, *, seed: int = 0, scale: float = 0.5) -> dict:
    """A random FaceID Portrait state dict: the plain FaceID projection making 16 tokens per vector, no LoRA."""
    import torch

    generator = torch.Generator().manual_seed(seed + 2000)
    cross = unet.config.cross_attention_dim
    state = faceid_state_dict(unet, seed=seed, lora=False, scale=scale)
    state["image_proj.proj.2.weight"] = torch.randn(cross * 16, ARCFACE_DIM * FACEID_MULT, generator=generator) * scale
    state["image_proj.proj.2.bias"] = torch.randn(cross * 16, generator=generator) * scale
    return state


def _save_state(state: dict, path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".bin":  # h94's nested {"image_proj": ..., "ip_adapter": ...} torch file
        nested: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in state.items():
            group, _, rest = key.partition(".")
            nested[group][rest] = value
        torch.save(nested, str(path))
    else:
        save_file(state, str(path))
    return path


def save_tiny_faceid_plus(path: str | Path, pipeline_folder: str | Path, *, seed: int = 0) -> Path:
    """A FaceID Plus checkpoint for the UNet in `pipeline_folder` (name it `...plusv2...` for Plus v2)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_folder) / "unet")
    return _save_state(faceid_plus_state_dict(unet, seed=seed), Path(path))


def save_tiny_portrait(path: str | Path, pipeline_folder: str | Path, *, seed: int = 0) -> Path:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_folder) / "unet")
    return _save_state(portrait_state_dict(unet, seed=seed), Path(path))


def save_tiny_clip_encoder(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random transformers `CLIPVisionModelWithProjection` saved as a folder (config.json +
    model.safetensors), the layout of laion/CLIP-ViT-H-14-laion2B-s32B-b79K's transformers files."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=CLIP_HIDDEN, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        image_size=CLIP_IMAGE_SIZE, patch_size=8, projection_dim=32))
    model.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
