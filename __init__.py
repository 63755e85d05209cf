"""castkeep: keep a character's face the same across AI-generated images.

    import castkeep

    castkeep.compare("a.jpg", "b.jpg").same                       # same person?
    with castkeep.Store.open("cast", create=True) as store:      # register / identify / score
        store.register("Mara", ["a.jpg", "b.jpg", "c.jpg"])
    generator = castkeep.Generator.from_pretrained("models/sd15", "models/faceid/ip-adapter-faceid_sd15.bin")
    run = generator.generate("Mara", "portrait, city at night", store="cast", num_images=4)

`import castkeep` stays light: the names below are imported on first use (PEP 562 module
`__getattr__`), so torch, diffusers, onnxruntime and FAISS load only when something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CastkeepError

__version__ = "0.1.0"

# public name → module that defines it (imported when the name is first looked up)
_LAZY: dict[str, str] = {
    "compare": ".identity.comparison",
    "Comparison": ".identity.comparison",
    "SAME_PERSON_THRESHOLD": ".identity.similarity",
    "FaceAnalyzer": ".identity.analyzer",
    "ModelPack": ".landmarks.model_pack",
    "Store": ".identity.store",
    "Generator": ".generation.generator",
    "generate": ".generation.generator",
    "GenerationConfig": ".generation.config",
    "Identity": ".generation.runner",
    "RunResult": ".generation.runner",
    "Provenance": ".generation.provenance.output",
    "C2paCredentials": ".generation.provenance.credentials",
    "inspect_image": ".generation.provenance.inspection",
}

# Spelled out (not built from _LAZY) so linters and IDEs read it statically; a test keeps them equal.
__all__ = [
    "C2paCredentials", "CastkeepError", "Comparison", "FaceAnalyzer", "GenerationConfig", "Generator", "Identity",
    "ModelPack", "Provenance", "RunResult", "SAME_PERSON_THRESHOLD", "Store", "__version__", "compare", "generate",
    "inspect_image",
]

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time __getattr__ resolves these
    from .generation.config import GenerationConfig
    from .generation.generator import Generator, generate
    from .generation.provenance.credentials import C2paCredentials
    from .generation.provenance.inspection import inspect_image
    from .generation.provenance.output import Provenance
    from .generation.runner import Identity, RunResult
    from .identity.analyzer import FaceAnalyzer
    from .identity.comparison import Comparison, compare
    from .identity.similarity import SAME_PERSON_THRESHOLD
    from .identity.store import Store
    from .landmarks.model_pack import ModelPack


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
