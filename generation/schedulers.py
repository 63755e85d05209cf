"""Scheduler names users know (A1111/ComfyUI sampler names) → diffusers scheduler classes."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

# name → (diffusers class, extra config, A1111 "Sampler" label)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, "DPM++ 2M"),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
SCHEDULER_NAMES = ("default", *SCHEDULERS)


def sampler_label(scheduler: Any) -> str:
    """The A1111 'Sampler' label for a configured diffusers scheduler instance."""
    class_name = type(scheduler).__name__
    karras = bool(getattr(scheduler.config, "use_karras_sigmas", False))
    for cls_name, extra, label in SCHEDULERS.values():
        if cls_name == class_name and bool(extra.get("use_karras_sigmas", False)) == karras:
            return label
    return class_name


def apply_scheduler(pipe: Any, name: str) -> str:
    """Swap the pipeline's scheduler (keeping its beta schedule); returns the sampler label."""
    if name not in SCHEDULER_NAMES:
        raise ConfigError(f"unknown --scheduler {name!r}: choose one of {', '.join(SCHEDULER_NAMES)}")
    if name != "default":
        import diffusers

        cls_name, extra, _ = SCHEDULERS[name]
        pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)
    return sampler_label(pipe.scheduler)
