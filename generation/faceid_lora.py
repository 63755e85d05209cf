"""The FaceID LoRA's strength, per run.

h94's FaceID checkpoints carry a LoRA trained with the adapter (diffusers loads it through peft as
adapter `faceid_0`, at weight 1). Users report that 0.6-0.7 follows the prompt better than 1.0, so its
weight is a run setting (`GenerationConfig.lora_scale`). With `id_scale` 0 the identity is off, and so is
the LoRA: the output is then the base model's own.
"""

from __future__ import annotations

from typing import Any

FACEID_LORA_PREFIX = "faceid_"  # diffusers' load_ip_adapter names the LoRA of adapter k `faceid_{k}`


def faceid_lora_adapters(pipe: Any) -> list[str]:
    """The peft adapter names of the loaded FaceID LoRAs (empty for a checkpoint without one)."""
    return sorted(name for name in getattr(pipe.unet, "peft_config", None) or {}
                  if name.startswith(FACEID_LORA_PREFIX))


def effective_lora_scale(id_scale: float, lora_scale: float) -> float:
    """The LoRA weight a run applies: `lora_scale`, or 0 when the identity itself is off."""
    return 0.0 if id_scale == 0 else lora_scale


def apply_faceid_lora_scale(pipe: Any, id_scale: float, lora_scale: float) -> float | None:
    """Set every FaceID LoRA's weight for this run; the weight applied (None: no LoRA loaded)."""
    names = faceid_lora_adapters(pipe)
    if not names:
        return None
    weight = effective_lora_scale(id_scale, lora_scale)
    pipe.set_adapters(names, adapter_weights=[weight] * len(names))
    return weight
