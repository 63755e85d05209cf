"""Editing existing images with a character's identity: fix-face, edit (inpaint), outpaint, upscale."""

from .edit import edit_image
from .fix_face import fix_face
from .outpaint import outpaint
from .output import EditResult
from .upscale import upscale

__all__ = ["EditResult", "edit_image", "fix_face", "outpaint", "upscale"]
